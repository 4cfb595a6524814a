"""When the sun rises, sets, culminates and crosses the twilight depths (core, pure maths).

NOAA's solar calculator equations (after Meeus, *Astronomical Algorithms*): the sun's
declination and the equation of time at an instant give solar noon and the hour angle at
which the sun's centre reaches a given zenith distance. Each event is computed twice, the
second time with the sun's position at the first estimate, which keeps it within about a
minute of an ephemeris between the polar circles. ``solar`` in ``schedules.py`` is the
only user; it needs no third-party library (Celery's needs ``ephem``).

The zenith distances follow Celery's horizons: sunrise and sunset when the sun's upper
limb is 34' (refraction) below the horizon, i.e. its centre 50' below; the twilights when
its centre is 6, 12 or 18 degrees below; solar noon at the transit.
"""

from __future__ import annotations

import datetime
import math
from typing import Final, Literal

__all__ = ["EVENTS", "event_time"]

Direction = Literal["rising", "transit", "setting"]

# event -> (which crossing, zenith distance of the sun's centre in degrees)
EVENTS: Final[dict[str, tuple[Direction, float]]] = {
    "dawn_astronomical": ("rising", 108.0),
    "dawn_nautical": ("rising", 102.0),
    "dawn_civil": ("rising", 96.0),
    "sunrise": ("rising", 90.0 + 50.0 / 60.0),
    "solar_noon": ("transit", 90.0),
    "sunset": ("setting", 90.0 + 50.0 / 60.0),
    "dusk_civil": ("setting", 96.0),
    "dusk_nautical": ("setting", 102.0),
    "dusk_astronomical": ("setting", 108.0),
}

UNIX_EPOCH_JULIAN_DAY: Final = 2440587.5
J2000_JULIAN_DAY: Final = 2451545.0
MINUTES_PER_DAY: Final = 1440.0
REFINEMENTS: Final = 2


def _julian_day(day: datetime.date, minutes: float) -> float:
    """The Julian day of ``minutes`` after midnight UTC of ``day``."""
    return (
        day.toordinal()
        - datetime.date(1970, 1, 1).toordinal()
        + UNIX_EPOCH_JULIAN_DAY
        + (minutes / MINUTES_PER_DAY)
    )


def _sun_position(julian_day: float) -> tuple[float, float]:
    """Return the sun's declination (radians) and the equation of time (minutes)."""
    century = (julian_day - J2000_JULIAN_DAY) / 36525.0
    mean_longitude = math.radians(
        (280.46646 + century * (36000.76983 + century * 0.0003032)) % 360.0
    )
    mean_anomaly = math.radians(357.52911 + century * (35999.05029 - 0.0001537 * century))
    eccentricity = 0.016708634 - century * (0.000042037 + 0.0000001267 * century)
    centre = (
        math.sin(mean_anomaly) * (1.914602 - century * (0.004817 + 0.000014 * century))
        + math.sin(2 * mean_anomaly) * (0.019993 - 0.000101 * century)
        + math.sin(3 * mean_anomaly) * 0.000289
    )
    node = math.radians(125.04 - 1934.136 * century)
    apparent_longitude = math.radians(
        math.degrees(mean_longitude) + centre - 0.00569 - 0.00478 * math.sin(node)
    )
    mean_obliquity = (
        23.0
        + (26.0 + (21.448 - century * (46.815 + century * (0.00059 - century * 0.001813))) / 60.0)
        / 60.0
    )
    obliquity = math.radians(mean_obliquity + 0.00256 * math.cos(node))
    declination = math.asin(math.sin(obliquity) * math.sin(apparent_longitude))
    y = math.tan(obliquity / 2) ** 2
    equation_of_time = 4.0 * math.degrees(
        y * math.sin(2 * mean_longitude)
        - 2 * eccentricity * math.sin(mean_anomaly)
        + 4 * eccentricity * y * math.sin(mean_anomaly) * math.cos(2 * mean_longitude)
        - 0.5 * y * y * math.sin(4 * mean_longitude)
        - 1.25 * eccentricity * eccentricity * math.sin(2 * mean_anomaly)
    )
    return declination, equation_of_time


def _hour_angle_cosine(latitude: float, declination: float, zenith: float) -> float:
    """The cosine of the hour angle at which the sun's centre is ``zenith`` degrees from
    the zenith; outside [-1, 1] when it never gets there (polar day or night)."""
    phi = math.radians(latitude)
    return (math.cos(math.radians(zenith)) - math.sin(phi) * math.sin(declination)) / (
        math.cos(phi) * math.cos(declination)
    )


def event_time(
    event: str, day: datetime.date, latitude: float, longitude: float
) -> datetime.datetime | None:
    """Return when ``event`` happens in the solar day whose noon falls near ``day``'s noon
    at ``longitude`` (east positive), as an aware UTC datetime; None if the sun does not
    reach the event's depth that day.

    The instant can fall on the UTC date before or after ``day`` far from Greenwich.
    """
    direction, zenith = EVENTS[event]
    sign = {"rising": 1.0, "transit": 0.0, "setting": -1.0}[direction]
    minutes = 720.0 - 4.0 * longitude
    cosine = 1.0
    for _ in range(REFINEMENTS + 1):
        declination, equation_of_time = _sun_position(_julian_day(day, minutes))
        if sign:
            cosine = _hour_angle_cosine(latitude, declination, zenith)
        # Out of range at the first estimate (noon), the sun may still get there later in
        # the day as its declination moves: estimate again from its closest approach.
        hour_angle = math.degrees(math.acos(min(1.0, max(-1.0, cosine))))
        minutes = 720.0 - 4.0 * (longitude + sign * hour_angle) - equation_of_time
    if not -1.0 <= cosine <= 1.0:
        return None
    midnight = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
    return midnight + datetime.timedelta(minutes=minutes)
