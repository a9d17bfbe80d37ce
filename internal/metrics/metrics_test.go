package metrics

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/fold"
	"github.com/dialtrap/dialtrap/internal/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scrape GETs h as Prometheus would and parses the text format.
func scrape(t *testing.T, h http.Handler) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return fams, body
}

// value returns the value of the series of fam with exactly these labels (name=value pairs),
// and whether there is one.
func value(fam *dto.MetricFamily, labels ...string) (float64, bool) {
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.Metric {
		if len(m.Label)*2 != len(labels) {
			continue
		}
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func probeEvent(transport, method, tool string) *event.Event {
	return &event.Event{Transport: transport, SIPMethod: method, Tool: tool}
}

// Counters move for each event, and whatever an attacker puts in a method or a User-Agent
// lands on one of a fixed set of series.
func TestProbesCountedWithBoundedLabels(t *testing.T) {
	m := New("1.2.3")
	m.Probe(probeEvent(event.UDP, "OPTIONS", "sipvicious"))
	m.Probe(probeEvent(event.UDP, "OPTIONS", "sipvicious"))
	m.Probe(probeEvent(event.TCP, "XYZ'--", "sqlmap-ish"))
	m.Probe(probeEvent(event.TCP, "invite", "")) // methods are case-sensitive: lower case is another method
	m.Probe(probeEvent(event.TLS, "", ""))       // a SIP response or garbage
	m.Probe(probeEvent(event.TLS, "REGISTER", "sipsak"))
	m.Probe(probeEvent("SCTP", "INVITE", "sipp")) // no capture transport: not a probe
	folded := probeEvent(event.UDP, "INVITE", "sipvicious")
	folded.RepeatCount = 4999 // stands for 4,999 probes alike
	m.Probe(folded)

	fams, body := scrape(t, m.Handler())
	probes := fams["dialtrap_sip_probes_total"]
	if probes.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("dialtrap_sip_probes_total is %v, want a counter", probes.GetType())
	}
	for _, c := range []struct {
		transport, method, tool string
		want                    float64
	}{
		{"UDP", "OPTIONS", "sipvicious", 2},
		{"TCP", "other", "unknown", 2},
		{"TLS", "none", "unknown", 1},
		{"TLS", "REGISTER", "sipsak", 1},
		{"UDP", "INVITE", "sipp", 0},
		{"UDP", "INVITE", "sipvicious", 4999},
	} {
		got, ok := value(probes, "transport", c.transport, "method", c.method, "tool", c.tool)
		if !ok || got != c.want {
			t.Errorf("probes{%s,%s,%s} = %v (present %v), want %v", c.transport, c.method, c.tool, got, ok, c.want)
		}
	}
	if want := len(Transports) * len(Methods) * len(Tools); len(probes.Metric) != want {
		t.Errorf("%d probe series, want the fixed %d", len(probes.Metric), want)
	}
	total := 0.0
	for _, s := range probes.Metric {
		total += s.Counter.GetValue()
	}
	if total != 5005 {
		t.Errorf("%v probes counted in all, want 5005 (the SCTP event is none)", total)
	}
	for _, bad := range []string{"XYZ", "sqlmap", "invite", "SCTP"} {
		if strings.Contains(body, bad) {
			t.Errorf("an attacker's value %q reached the scrape", bad)
		}
	}
	if v, ok := value(fams["dialtrap_build_info"], "version", "1.2.3", "goversion", runtime.Version()); !ok || v != 1 {
		t.Errorf("build info: %v %v", v, ok)
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are registered", name)
		}
	}
}

func TestIndexesMatchLabelValues(t *testing.T) {
	for i, name := range Methods[:14] {
		if MethodIndex(name) != i {
			t.Errorf("MethodIndex(%s) = %d, want %d", name, MethodIndex(name), i)
		}
	}
	if Methods[MethodIndex("FOO")] != MethodOther || Methods[MethodIndex("")] != MethodNone {
		t.Error("catch-all methods")
	}
	for i, name := range Tools[1:] {
		if ToolIndex(name) != i+1 {
			t.Errorf("ToolIndex(%s) = %d, want %d", name, ToolIndex(name), i+1)
		}
	}
	if Tools[ToolIndex("")] != ToolUnknown || Tools[ToolIndex("x")] != ToolUnknown {
		t.Error("catch-all tool")
	}
}

// slowSink writes what it is given; it fails its first write when fail is set.
type slowSink struct {
	fail    atomic.Bool
	written atomic.Int64
}

func (s *slowSink) Name() string { return "test" }
func (s *slowSink) Write(_ context.Context, b []*event.Event) error {
	if s.fail.Swap(false) {
		return &hub.PartialError{Done: 1, Err: errors.New("disk full")}
	}
	s.written.Add(int64(len(b)))
	return nil
}

// The collector reads a real hub's counters at scrape time: queue depth while events wait,
// drops of a full queue, write errors; and the store timer passes errors through unchanged.
func TestSinkCountersReadFromTheHub(t *testing.T) {
	m := New("test")
	h := hub.New(nil)
	sink := &slowSink{}
	sink.fail.Store(true)
	timed := m.TimeSink(sink)
	if timed.Name() != "test" {
		t.Fatalf("the timed sink is named %q", timed.Name())
	}
	h.Add(timed, hub.Options{Capacity: 3, MaxBatch: 10})
	m.Watch(Sources{Sinks: h.Stats})
	for range 5 {
		h.Publish(&event.Event{Transport: event.UDP, SIPMessage: "x"})
	}
	fams, _ := scrape(t, m.Handler())
	for name, want := range map[string]float64{
		"dialtrap_sink_queue_events":         3,
		"dialtrap_sink_events_dropped_total": 2,
		"dialtrap_sink_write_errors_total":   0,
	} {
		if v, ok := value(fams[name], "sink", "test"); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v, _ := value(fams["dialtrap_sink_queue_bytes"], "sink", "test"); v <= 0 {
		t.Errorf("queue bytes %v with 3 events queued", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil { // drains: the first write fails after one event, the retry writes the rest
		t.Fatal(err)
	}
	fams, _ = scrape(t, m.Handler())
	for name, want := range map[string]float64{
		"dialtrap_sink_queue_events":           0,
		"dialtrap_sink_write_errors_total":     1,
		"dialtrap_sink_events_delivered_total": 3,
	} {
		if v, ok := value(fams[name], "sink", "test"); !ok || v != want {
			t.Errorf("after drain: %s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if sink.written.Load() != 2 {
		t.Errorf("the sink wrote %d events after its partial failure, want 2", sink.written.Load())
	}
	// Two writes timed: the failed one and the retry.
	if v, _ := value(fams["dialtrap_store_write_duration_seconds"]); v != 2 {
		t.Errorf("store write histogram count %v, want 2", v)
	}
	if fam := fams["dialtrap_store_write_batch_events"]; fam == nil || fam.Metric[0].Histogram.GetSampleSum() != 3+2 {
		t.Errorf("batch sizes: %v, want 3 then 2", fam)
	}
}

func TestPeersAndWebhookSources(t *testing.T) {
	m := New("test")
	m.Watch(Sources{
		KernelDrops:       func() uint64 { return 7 },
		RepliesOverBudget: func() uint64 { return 3 },
		Peers: func() Peers {
			return Peers{Connected: 2, Received: 10, Rejected: map[string]uint64{"signature": 4, "made-up": 5, "more-made-up": 1},
				Dropped: map[string]uint64{"outbound": 1}}
		},
		Webhook: func() Webhook { return Webhook{SpoolEvents: 5, SpoolBytes: 4096, Delivered: 9} },
		Fold:    func() fold.Stats { return fold.Stats{Folded: 999, Emitted: 2, Held: 4, Groups: 3, Bytes: 1500} },
	})
	fams, _ := scrape(t, m.Handler())
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"dialtrap_sip_udp_kernel_drops_total", nil, 7},
		{"dialtrap_sip_replies_over_budget_total", nil, 3},
		{"dialtrap_p2p_peers", nil, 2},
		{"dialtrap_p2p_events_received_total", nil, 10},
		{"dialtrap_p2p_events_rejected_total", []string{"reason", "signature"}, 4},
		{"dialtrap_p2p_events_rejected_total", []string{"reason", "rate"}, 0},
		{"dialtrap_p2p_events_rejected_total", []string{"reason", "other"}, 6},
		{"dialtrap_p2p_messages_dropped_total", []string{"queue", "outbound"}, 1},
		{"dialtrap_p2p_messages_dropped_total", []string{"queue", "delivery"}, 0},
		{"dialtrap_webhook_spool_events", nil, 5},
		{"dialtrap_webhook_spool_bytes", nil, 4096},
		{"dialtrap_webhook_events_delivered_total", nil, 9},
		{"dialtrap_fold_probes_folded_total", nil, 999},
		{"dialtrap_fold_events_total", nil, 2},
		{"dialtrap_fold_probes_held_total", nil, 4},
		{"dialtrap_fold_probes_unfolded_total", nil, 0},
		{"dialtrap_fold_groups", nil, 3},
		{"dialtrap_fold_bytes", nil, 1500},
	} {
		if v, ok := value(fams[c.name], c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if _, ok := value(fams["dialtrap_p2p_messages_dropped_total"], "queue", "other"); ok {
		t.Error("an \"other\" queue without anything unknown")
	}
	// Parts that are off have no metrics at all.
	fams, _ = scrape(t, New("test").Handler())
	for name := range fams {
		if strings.HasPrefix(name, "dialtrap_p2p_") || strings.HasPrefix(name, "dialtrap_webhook_") || strings.HasPrefix(name, "dialtrap_sink_") ||
			strings.HasPrefix(name, "dialtrap_fold_") {
			t.Errorf("%s without its source", name)
		}
	}
}

func TestObserveAPI(t *testing.T) {
	m := New("test")
	m.ObserveAPI("/numbers/{n}", 200, time.Millisecond)
	m.ObserveAPI("/numbers/{n}", 404, time.Millisecond)
	m.ObserveAPI("", 405, time.Millisecond)
	m.ObserveAPI("/stats", 999, time.Millisecond)
	fams, _ := scrape(t, m.Handler())
	fam := fams["dialtrap_api_request_duration_seconds"]
	if fam.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("type %v", fam.GetType())
	}
	for _, c := range [][]string{
		{"route", "/numbers/{n}", "status_class", "2xx"},
		{"route", "/numbers/{n}", "status_class", "4xx"},
		{"route", "none", "status_class", "4xx"},
		{"route", "/stats", "status_class", "other"},
	} {
		if v, ok := value(fam, c...); !ok || v != 1 {
			t.Errorf("%v: count %v (present %v), want 1", c, v, ok)
		}
	}
}

func TestStoreSpoolSource(t *testing.T) {
	fams, _ := scrape(t, New("test").Handler())
	for name := range fams {
		if strings.HasPrefix(name, "dialtrap_store_spool") {
			t.Errorf("%s without its source (a node on SQLite has no store spool)", name)
		}
	}
	m := New("test")
	m.Watch(Sources{StoreSpool: func() StoreSpool {
		return StoreSpool{Spooling: true, Events: 11, Bytes: 8192, Spooled: 12, Replayed: 1, FullRefusals: 2, Torn: 1}
	}})
	fams, _ = scrape(t, m.Handler())
	for name, want := range map[string]float64{
		"dialtrap_store_spooling":                    1,
		"dialtrap_store_spool_events":                11,
		"dialtrap_store_spool_bytes":                 8192,
		"dialtrap_store_spool_events_spooled_total":  12,
		"dialtrap_store_spool_events_replayed_total": 1,
		"dialtrap_store_spool_full_refusals_total":   2,
		"dialtrap_store_spool_events_refused_total":  0,
		"dialtrap_store_spool_records_corrupt_total": 0,
		"dialtrap_store_spool_records_torn_total":    1,
		"dialtrap_store_spool_replay_errors_total":   0,
	} {
		if v, ok := value(fams[name]); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}
