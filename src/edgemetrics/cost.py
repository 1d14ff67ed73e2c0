"""``edgemetrics cost``: data points and dollars a month on Workers Analytics Engine.

AE bills data points written (one per ``writeDataPoint``) and read queries (one per SQL
API call). Prices, from Cloudflare's Workers Analytics Engine pricing page
(developers.cloudflare.com/analytics/analytics-engine/pricing), as read on 2026-11-25:

- Workers Paid: 10 million data points a month included, then $0.25 per million;
  1 million read queries included, then $1.00 per million. (The Workers Paid plan itself
  is a separate subscription, not counted here.)
- Workers Free: 100,000 data points and 10,000 read queries a day.

API traffic is what dominates, and the middleware's mode decides its cost:

- ``per-request``: one data point per request;
- ``sampled``: one per kept request (``sample_rate`` of them; each stores its weight);
- ``cost``: one per endpoint, status class, minute and process that saw traffic.

>>> profile = Profile(requests_per_day=10_000_000, endpoints=50)
>>> [round(estimate(profile, mode).data_points / 1e6, 1) for mode in MODES]
[304.4, 30.4, 17.5]
>>> round(estimate(profile, "per-request").dollars, 2)
73.59
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

PRICES_AS_OF = "2026-11-25"
PRICES_SOURCE = "developers.cloudflare.com/analytics/analytics-engine/pricing"
PAID_INCLUDED_POINTS = 10_000_000
PAID_PRICE_PER_MILLION_POINTS = 0.25
PAID_INCLUDED_READS = 1_000_000
PAID_PRICE_PER_MILLION_READS = 1.00
FREE_POINTS_PER_DAY = 100_000
FREE_READS_PER_DAY = 10_000

DAYS_PER_MONTH = 30.4375  # the mean month (365.25 / 12)
MINUTES_PER_MONTH = DAYS_PER_MONTH * 24 * 60
MODES = ("per-request", "sampled", "cost")


@dataclass(frozen=True)
class Profile:
    """A traffic profile. Requests are spread evenly over endpoints and the day."""

    requests_per_day: float
    endpoints: int = 20
    status_classes: int = 2  # status classes an endpoint answers with in a typical minute
    processes: int = 4  # each process aggregates on its own in cost mode
    sample_rate: float = 0.1
    other_events_per_day: float = 0.0  # views, plays, purchases, jobs, queries...
    dashboard_queries_per_day: float = 2_000.0


@dataclass(frozen=True)
class Estimate:
    mode: str
    data_points: float
    reads: float
    dollars: float
    fits_free_plan: bool


def api_points_per_month(profile: Profile, mode: str) -> float:
    """Data points a month written for API calls in one mode."""
    requests = profile.requests_per_day * DAYS_PER_MONTH
    if mode == "per-request":
        return requests
    if mode == "sampled":
        return requests / max(1, round(1 / profile.sample_rate))
    if mode == "cost":
        series = profile.endpoints * profile.status_classes * profile.processes
        if series <= 0:
            return 0.0
        per_minute = requests / MINUTES_PER_MONTH / series
        # A series writes in a minute only if it saw a request (Poisson arrivals).
        return series * MINUTES_PER_MONTH * (1 - math.exp(-per_minute))
    raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")


def estimate(profile: Profile, mode: str) -> Estimate:
    """Data points, read queries and dollars a month (Workers Paid prices)."""
    points = api_points_per_month(profile, mode) + profile.other_events_per_day * DAYS_PER_MONTH
    reads = profile.dashboard_queries_per_day * DAYS_PER_MONTH
    dollars = (
        max(0.0, points - PAID_INCLUDED_POINTS) / 1e6 * PAID_PRICE_PER_MILLION_POINTS
        + max(0.0, reads - PAID_INCLUDED_READS) / 1e6 * PAID_PRICE_PER_MILLION_READS
    )
    fits_free = (
        points / DAYS_PER_MONTH <= FREE_POINTS_PER_DAY
        and reads / DAYS_PER_MONTH <= FREE_READS_PER_DAY
    )
    return Estimate(mode, points, reads, dollars, fits_free)


def report(profile: Profile) -> str:
    """The table ``edgemetrics cost`` prints."""
    lines = [
        f"AE prices as of {PRICES_AS_OF} ({PRICES_SOURCE}): Workers Paid includes "
        f"{PAID_INCLUDED_POINTS / 1e6:g}M data points and "
        f"{PAID_INCLUDED_READS / 1e6:g}M reads a month, "
        f"then ${PAID_PRICE_PER_MILLION_POINTS:.2f}/M points and "
        f"${PAID_PRICE_PER_MILLION_READS:.2f}/M reads",
        f"profile: {profile.requests_per_day:,.0f} requests/day "
        f"over {profile.endpoints} endpoints, "
        f"{profile.processes} processes, sample rate {profile.sample_rate:g}, "
        f"{profile.other_events_per_day:,.0f} other events/day, "
        f"{profile.dashboard_queries_per_day:,.0f} dashboard queries/day",
        f"{'mode':<12} {'points/month':>16} {'reads/month':>14} {'USD/month':>11}  free plan",
    ]
    for mode in MODES:
        e = estimate(profile, mode)
        lines.append(
            f"{mode:<12} {e.data_points:>16,.0f} {e.reads:>14,.0f} {e.dollars:>11,.2f}  "
            f"{'fits' if e.fits_free_plan else 'over'}"
        )
    return "\n".join(lines)


def _positive(kind: type[float] | type[int]) -> object:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.sample_rate <= 1:
        print("edgemetrics cost: --sample-rate: must be in (0, 1]")
        return 2
    profile = Profile(
        requests_per_day=args.requests_per_day,
        endpoints=args.endpoints,
        status_classes=args.status_classes,
        processes=args.processes,
        sample_rate=args.sample_rate,
        other_events_per_day=args.other_events_per_day,
        dashboard_queries_per_day=args.dashboard_queries_per_day,
    )
    print(report(profile))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``edgemetrics cost`` on the CLI's subparsers.

    >>> parser = argparse.ArgumentParser(prog="edgemetrics")
    >>> add_command(parser.add_subparsers())
    >>> args = parser.parse_args(["cost", "--requests-per-day", "1000000"])
    >>> args.func(args)  # doctest: +ELLIPSIS
    AE prices as of ...
    0
    """
    parser = subparsers.add_parser(
        "cost",
        help="estimate AE data points and dollars a month for a traffic profile",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--requests-per-day", type=_positive(float), required=True)
    parser.add_argument("--endpoints", type=_positive(int), default=20)
    parser.add_argument("--status-classes", type=_positive(int), default=2)
    parser.add_argument(
        "--processes", type=_positive(int), default=4, help="server worker processes"
    )
    parser.add_argument("--sample-rate", type=float, default=0.1, help="for the sampled mode")
    parser.add_argument("--other-events-per-day", type=_positive(float), default=0.0)
    parser.add_argument("--dashboard-queries-per-day", type=_positive(float), default=2000.0)
    parser.set_defaults(func=_run)
