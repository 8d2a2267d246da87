from __future__ import annotations

import pytest

from workbench.deploy.traffic import Counters, TrafficSampler, parse_metrics, quantile, rates

SCRAPE = """\
# HELP workbench_requests_total Requests answered.
# TYPE workbench_requests_total counter
workbench_requests_total{model="digits",version="1.0.0",outcome="ok"} 90.0
workbench_requests_total{model="digits",version="1.0.0",outcome="server_error"} 10.0
# HELP workbench_request_duration_seconds Request latency.
# TYPE workbench_request_duration_seconds histogram
workbench_request_duration_seconds_bucket{version="1.0.0",le="0.01"} 50.0
workbench_request_duration_seconds_bucket{version="1.0.0",le="0.1"} 90.0
workbench_request_duration_seconds_bucket{version="1.0.0",le="+Inf"} 100.0
workbench_request_duration_seconds_count{version="1.0.0"} 100.0
workbench_request_duration_seconds_sum{version="1.0.0"} 3.0
"""


def test_parse_metrics_keeps_labels_and_values() -> None:
    samples = parse_metrics(SCRAPE)
    assert samples["workbench_requests_total"][1] == (
        {"model": "digits", "version": "1.0.0", "outcome": "server_error"},
        10.0,
    )
    assert len(samples["workbench_request_duration_seconds_bucket"]) == 3


def test_parse_metrics_refuses_what_is_not_the_exposition_format() -> None:
    with pytest.raises(ValueError):
        parse_metrics("this is { not prometheus\n")


def test_counters_sum_requests_and_server_errors_and_merge_buckets() -> None:
    counters = Counters.from_samples(parse_metrics(SCRAPE), at=10.0)
    assert (counters.requests, counters.errors) == (100.0, 10.0)
    assert counters.buckets == ((0.01, 50.0), (0.1, 90.0), (float("inf"), 100.0))


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = ((0.01, 50.0), (0.1, 90.0), (float("inf"), 100.0))
    assert quantile(buckets, 0.5) == pytest.approx(0.01)
    assert quantile(buckets, 0.7) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(buckets, 0.99) == pytest.approx(0.1)  # in +Inf: the highest finite bound
    assert quantile((), 0.99) is None
    assert quantile(((1.0, 0.0),), 0.99) is None


def test_rates_between_two_scrapes() -> None:
    before = Counters(0.0, 100.0, 10.0, ((0.01, 50.0), (0.1, 90.0), (float("inf"), 100.0)))
    after = Counters(2.0, 300.0, 12.0, ((0.01, 150.0), (0.1, 290.0), (float("inf"), 300.0)))
    got = rates(before, after)
    assert got["rps"] == pytest.approx(100.0)
    assert got["error_rate"] == pytest.approx(0.01)
    # the 200 requests in between: 100 under 10 ms, 100 in 10..100 ms; p99 is 98% into that bucket
    assert got["p99_ms"] == pytest.approx(98.2)


def test_rates_of_a_restarted_instance_are_unknown() -> None:
    before = Counters(0.0, 100.0, 0.0, ())
    after = Counters(1.0, 5.0, 0.0, ())
    assert rates(before, after) == {"rps": None, "error_rate": None, "p99_ms": None}


def test_sampler_yields_rates_from_the_second_scrape_per_colour_and_url() -> None:
    sampler = TrafficSampler()
    first = Counters(0.0, 0.0, 0.0, ())
    assert sampler.add("blue", "http://a", first)["rps"] is None
    assert sampler.add("blue", "http://a", Counters(1.0, 50.0, 0.0, ()))["rps"] == 50.0
    assert sampler.add("blue", "http://b", Counters(1.0, 50.0, 0.0, ()))["rps"] is None

