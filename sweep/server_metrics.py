"""What `sweep-serve` tells a Prometheus scraper at `GET /metrics`, through prometheus-client (a
registry of each server's own): requests answered by route and status code, their duration, the
size of each model call's batch, and the images in flight. Named as BentoML and Ray Serve name
theirs: `<prefix>_requests_total`, `<prefix>_request_duration_seconds`, `<prefix>_batch_size`."""

from __future__ import annotations

from collections.abc import Callable

from sweep.inference_protocol import MODEL_NAME

# the routes counted by name; any other path is counted as `other`
ROUTES = ("/predict", "/health", "/ready", "/info", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready",
          f"/v2/models/{MODEL_NAME}", f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/infer")  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self, in_flight: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("sweep_serve_requests", "Requests answered, by route and HTTP status code",
                                ["route", "status_code"], registry=self.registry)  # fmt: skip
        self.duration = Histogram("sweep_serve_request_duration_seconds", "Time to answer a request, by route",
                                  ["route"], registry=self.registry)  # fmt: skip
        self.batch = Histogram("sweep_serve_batch_size", "Images in one call of the model", buckets=BATCH_BUCKETS,
                               registry=self.registry)  # fmt: skip
        images = Gauge("sweep_serve_images_in_flight", "Images waiting for the model or in it", registry=self.registry)
        images.set_function(in_flight)

    def answered(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"  # a scanner's paths must not become labels without bound
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scraper reads, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
