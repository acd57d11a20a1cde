import Metrics
import Prometheus

/// The server's metrics, through swift-metrics handlers made by a Prometheus factory of its own registry (no global
/// bootstrap, so several servers, e.g. in tests, do not share counters). `GET /metrics` renders the registry.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let requests: Metrics.Counter
    let rejected: Metrics.Counter
    let cancelled: Metrics.Counter
    let failed: Metrics.Counter
    let engineFailures: Metrics.Counter
    let generatedTokens: Metrics.Counter
    let promptTokens: Metrics.Counter
    let preemptions: Metrics.Counter
    let queueDepth: Metrics.Gauge
    let running: Metrics.Gauge
    let kvMapped: Metrics.Gauge
    let kvUsed: Metrics.Gauge
    let kvCapacity: Metrics.Gauge
    let kvActiveSlots: Metrics.Gauge
    let trackedRequests: Metrics.Gauge
    let openStreams: Metrics.Gauge
    let stepLatency: Metrics.Timer
    private let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        f.durationHistogramBuckets["vattn_engine_step_seconds"] = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(500),
            .seconds(1), .seconds(2), .seconds(5),
        ]
        factory = f
        requests = Metrics.Counter(label: "vattn_requests_total", factory: f)
        rejected = Metrics.Counter(label: "vattn_requests_rejected_total", factory: f)
        cancelled = Metrics.Counter(label: "vattn_requests_cancelled_total", factory: f)
        // Accepted requests that ended with an error (an engine fault, or the drain limit at shutdown).
        failed = Metrics.Counter(label: "vattn_requests_failed_total", factory: f)
        engineFailures = Metrics.Counter(label: "vattn_engine_step_failures_total", factory: f)
        generatedTokens = Metrics.Counter(label: "vattn_generated_tokens_total", factory: f)
        promptTokens = Metrics.Counter(label: "vattn_prompt_tokens_total", factory: f)
        preemptions = Metrics.Counter(label: "vattn_preemptions_total", factory: f)
        queueDepth = Metrics.Gauge(label: "vattn_queue_depth", factory: f)
        running = Metrics.Gauge(label: "vattn_running_requests", factory: f)
        kvMapped = Metrics.Gauge(label: "vattn_kv_mapped_bytes", factory: f)
        kvUsed = Metrics.Gauge(label: "vattn_kv_used_bytes", factory: f)
        // What a leak check needs: when idle, slots and request bookkeeping are all given back.
        kvCapacity = Metrics.Gauge(label: "vattn_kv_capacity_bytes", factory: f)
        kvActiveSlots = Metrics.Gauge(label: "vattn_kv_active_slots", factory: f)
        trackedRequests = Metrics.Gauge(label: "vattn_engine_tracked_requests", factory: f)
        openStreams = Metrics.Gauge(label: "vattn_open_streams", factory: f)
        stepLatency = Metrics.Timer(label: "vattn_engine_step_seconds", factory: f)
    }

    /// Requests by endpoint and HTTP status.
    func request(endpoint: String, status: Int) {
        Metrics.Counter(label: "vattn_http_requests_total", dimensions: [("endpoint", endpoint), ("status", String(status))],
                factory: factory).increment()
    }

    public func render() -> String { registry.emitToString() }
}
