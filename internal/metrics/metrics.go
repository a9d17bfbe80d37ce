// Package metrics holds a node's Prometheus metrics: their names, labels and buckets, one
// registry per node (never the global one: tests run several nodes in one process), the probe
// counter that the capture path calls, the store's write timer, the API's latency histogram,
// and a collector that reads the hub's, the peer node's and the webhook's own counters at
// scrape time, so nothing is counted twice. Every label value an attacker could influence is
// mapped onto a fixed list (SIP methods, scanner tools), so no probe can add a time series.
// The API serves Handler at /metrics (--metrics).
package metrics

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
)

// Label values of dialtrap_sip_probes_total. Methods outside Methods count as "other", SIP
// responses and non-SIP packets (no method) as "none"; tools outside Tools as "unknown".
var (
	Transports = [...]string{event.UDP, event.TCP, event.TLS}
	Methods    = [...]string{"INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY",
		"MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH", MethodOther, MethodNone}
	Tools = [...]string{ToolUnknown, "sipvicious", "sipp", "sipsak", "sipcli", "pplsip"}
)

// Catch-all label values.
const (
	MethodOther = "other"
	MethodNone  = "none"
	ToolUnknown = "unknown"
)

// Metrics is one node's registry and the metrics the node updates itself.
type Metrics struct {
	reg *prometheus.Registry
	// probes is resolved once: counting a probe is three switches and an atomic add.
	probes     [len(Transports)][len(Methods)][len(Tools)]prometheus.Counter
	storeWrite prometheus.Histogram
	storeBatch prometheus.Histogram
	api        *prometheus.HistogramVec
}

// New makes a registry with the build info, the Go runtime and process collectors, and the
// metrics the node updates (probes, store writes, API requests). version is the build's.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	probes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dialtrap_sip_probes_total",
		Help: "SIP messages captured by this node (not events from peers), by transport, method (a fixed list, else other; none for responses and non-SIP) and scanner tool (a fixed list, else unknown).",
	}, []string{"transport", "method", "tool"})
	for t, tn := range Transports {
		for me, mn := range Methods {
			for to, ton := range Tools {
				m.probes[t][me][to] = probes.WithLabelValues(tn, mn, ton)
			}
		}
	}
	m.storeWrite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dialtrap_store_write_duration_seconds",
		Help:    "Time the store took to write one batch of events (failed attempts included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.storeBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dialtrap_store_write_batch_events",
		Help:    "Events in one batch written to the store.",
		Buckets: []float64{1, 10, 100, 500, 1000, 2500, 5000},
	})
	m.api = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dialtrap_api_request_duration_seconds",
		Help:    "REST API requests by route pattern (none: answered before routing) and status class, time to the end of the handler.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"route", "status_class"})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dialtrap_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(probes, m.storeWrite, m.storeBatch, m.api, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the node's registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (or what the scraper negotiates).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Probe counts the probes of one captured event: one, or the repeat_count of a folded one
// (internal/fold). It allocates nothing; call it for this node's captures only, never for
// events learned from peers.
func (m *Metrics) Probe(e *event.Event) {
	t := transportIndex(e.Transport)
	if t < 0 {
		return // not a capture transport: not a probe
	}
	m.probes[t][MethodIndex(e.SIPMethod)][ToolIndex(e.Tool)].Add(float64(e.Weight()))
}

func transportIndex(t string) int {
	switch t {
	case event.UDP:
		return 0
	case event.TCP:
		return 1
	case event.TLS:
		return 2
	}
	return -1
}

// MethodIndex is the index in Methods of a SIP method's label value.
func MethodIndex(m string) int {
	switch m {
	case "INVITE":
		return 0
	case "REGISTER":
		return 1
	case "OPTIONS":
		return 2
	case "ACK":
		return 3
	case "BYE":
		return 4
	case "CANCEL":
		return 5
	case "SUBSCRIBE":
		return 6
	case "NOTIFY":
		return 7
	case "MESSAGE":
		return 8
	case "INFO":
		return 9
	case "PRACK":
		return 10
	case "UPDATE":
		return 11
	case "REFER":
		return 12
	case "PUBLISH":
		return 13
	case "":
		return 15 // none
	}
	return 14 // other
}

// ToolIndex is the index in Tools of a tool's label value.
func ToolIndex(t string) int {
	switch t {
	case "sipvicious":
		return 1
	case "sipp":
		return 2
	case "sipsak":
		return 3
	case "sipcli":
		return 4
	case "pplsip":
		return 5
	}
	return 0 // unknown
}

// TimeSink returns s with each Write timed into dialtrap_store_write_duration_seconds and
// its batch size into dialtrap_store_write_batch_events. Errors pass through unchanged (the
// hub reads PartialError and BadEventError from them).
func (m *Metrics) TimeSink(s hub.Sink) hub.Sink { return timedSink{s, m} }

type timedSink struct {
	hub.Sink
	m *Metrics
}

func (t timedSink) Write(ctx context.Context, batch []*event.Event) error {
	start := time.Now()
	err := t.Sink.Write(ctx, batch)
	t.m.storeWrite.Observe(time.Since(start).Seconds())
	t.m.storeBatch.Observe(float64(len(batch)))
	return err
}

// statusClasses are the status_class label values, by status/100.
var statusClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// ObserveAPI records one API request: route is the ServeMux pattern that served it ("" when
// it was answered before routing), never the raw path, so the label stays bounded.
func (m *Metrics) ObserveAPI(route string, status int, d time.Duration) {
	if route == "" {
		route = "none"
	}
	c := status / 100
	if c < 1 || c >= len(statusClasses) {
		c = 0
	}
	m.api.WithLabelValues(route, statusClasses[c]).Observe(d.Seconds())
}
