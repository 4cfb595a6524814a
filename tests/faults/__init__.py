"""The fault battery: real workers through broker restarts, crashes and poison tasks."""
