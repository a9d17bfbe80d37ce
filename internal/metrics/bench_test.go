package metrics

import (
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtrap/dialtrap/internal/event"
)

// benchEvents are what a scan looks like: mostly one method and tool, some others.
var benchEvents = []*event.Event{
	probeEvent(event.UDP, "OPTIONS", "sipvicious"),
	probeEvent(event.UDP, "REGISTER", "sipvicious"),
	probeEvent(event.TCP, "INVITE", "sipp"),
	probeEvent(event.UDP, "XYZ'--", ""),
	probeEvent(event.TLS, "", ""),
	probeEvent(event.UDP, "PUBLISH", "pplsip"),
	probeEvent(event.UDP, "OPTIONS", "sipsak"),
	probeEvent(event.TCP, "SUBSCRIBE", "sipcli"),
}

// BenchmarkProbe is the cost the capture path pays per probe with --metrics.
func BenchmarkProbe(b *testing.B) {
	m := New("bench")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Probe(benchEvents[i&7])
		i++
	}
}

// BenchmarkProbeAtomicBaseline is the floor: one atomic add per probe, nothing resolved.
func BenchmarkProbeAtomicBaseline(b *testing.B) {
	var n atomic.Uint64
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = benchEvents[i&7]
		n.Add(1)
		i++
	}
}

// BenchmarkProbeWithLabelValues is what resolving the labels per probe would cost.
func BenchmarkProbeWithLabelValues(b *testing.B) {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"transport", "method", "tool"})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e := benchEvents[i&7]
		v.WithLabelValues(e.Transport, Methods[MethodIndex(e.SIPMethod)], Tools[ToolIndex(e.Tool)]).Inc()
		i++
	}
}

// BenchmarkProbeParallel is the cost under contention: capture runs a reader per listener
// and per TCP connection.
func BenchmarkProbeParallel(b *testing.B) {
	m := New("bench")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Probe(benchEvents[i&7])
			i++
		}
	})
}
