package intel

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/sip"
)

// captureRate runs a real UDP capture server (passive, as a node's) with or without the
// enrichment and returns the probes a second it recorded while a sender blasts svmap's
// OPTIONS at it from loopback for d.
func captureRate(b *testing.B, raw []byte, enrich bool, d time.Duration) float64 {
	var got atomic.Int64
	cfg := sip.Config{Addr: "127.0.0.1:0", NodeID: "n", AppVersion: "bench",
		Publish: func(*event.Event) { got.Add(1) }}
	if enrich {
		cfg.Enrich = Enrich
	}
	srv := sip.New(cfg)
	if err := srv.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer srv.Close(context.Background())
	c, err := net.Dial("udp", srv.UDPAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	stop := time.Now().Add(d)
	start, before := time.Now(), got.Load()
	for time.Now().Before(stop) {
		for range 64 {
			c.Write(raw) // a full socket buffer drops: the receiver's rate is what counts
		}
	}
	time.Sleep(50 * time.Millisecond) // what is queued in the socket
	return float64(got.Load()-before) / time.Since(start).Seconds()
}

// BenchmarkCaptureWithEnrichment is the goal "capture rate with enrichment on vs off, in one
// run, at least 0.9x": the same server and load, alternating, three rounds each.
//
//	go test -run '^$' -bench CaptureWithEnrichment -benchtime 1x ./internal/intel
func BenchmarkCaptureWithEnrichment(b *testing.B) {
	raw := load(b, "svmap-options.sip")
	var on, off float64
	for range b.N {
		for range 3 {
			off += captureRate(b, raw, false, time.Second)
			on += captureRate(b, raw, true, time.Second)
		}
	}
	b.ReportMetric(off/float64(3*b.N), "probes/s-off")
	b.ReportMetric(on/float64(3*b.N), "probes/s-on")
	b.ReportMetric(on/off, "x-off")
}
