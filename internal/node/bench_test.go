package node

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/bgp"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/firewall"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// BenchmarkBGPFullSync100k is what a node restart costs the routers: from Start of a node
// whose store holds 100,000 proven attackers until a real BIRD holds all of them (store,
// change stream, agent, speaker, session), against the speaker alone handed the same
// addresses in the same run (the part no node can avoid).
//
//	go test -run '^$' -bench BGPFullSync -benchtime 1x ./internal/node
func BenchmarkBGPFullSync100k(b *testing.B) {
	const n = 100000
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{45, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	dir := b.TempDir()
	seed(b, dir, addrs)
	var full, bare time.Duration
	for range b.N {
		full += nodeSync(b, dir, n)
		bare += speakerSync(b, addrs)
	}
	b.ReportMetric(float64(full.Milliseconds())/float64(b.N), "node-ms/100k")
	b.ReportMetric(float64(bare.Milliseconds())/float64(b.N), "speaker-ms/100k")
	b.ReportMetric(float64(full)/float64(bare), "x-speaker")
}

// seed writes one proven (TCP) probe from each address through the store's own write path.
func seed(b *testing.B, dir string, addrs []netip.Addr) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, dir+"/dialtrap.db")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	var batch []*event.Event
	for i, a := range addrs {
		batch = append(batch, &event.Event{AppName: event.AppName, AppVersion: "bench", Timestamp: event.FormatTime(now),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "bench", CollectedMethod: event.Responsive,
			Transport: event.TCP, SourceIP: a.String(), SourcePort: 5060, DestinationIP: "192.0.2.10", DestinationPort: 5060,
			CalledNumber: "0044900123456", SIPMethod: "INVITE", SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE",
			SourceVerified: true})
		if len(batch) == 5000 {
			if err := st.Write(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := st.Write(ctx, batch); err != nil {
		b.Fatal(err)
	}
}

func waitRoutes(b *testing.B, r *testutil.Bird, want int) time.Time {
	deadline := time.Now().Add(5 * time.Minute)
	for r.Count() != want {
		if time.Now().After(deadline) {
			b.Fatalf("the router holds %d routes, not %d", r.Count(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Now()
}

func nodeSync(b *testing.B, dir string, n int) time.Duration {
	r := testutil.StartBird(b, testutil.BirdOptions{ASN: 65001, PeerASN: 65000})
	cfg := load(b, "-R", "--data-dir", dir, "--never-block-defaults=false", "--bgp-asn", "65000", "--bgp-router-id", "127.0.0.1",
		"--bgp-neighbor", fmt.Sprintf("127.0.0.2 as 65001 port %d", r.Port), "--bgp-max-prefixes", fmt.Sprint(n))
	cfg.DBFile = dir + "/dialtrap.db"
	nd, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := nd.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer nd.Close(context.Background())
	done := waitRoutes(b, r, n)
	b.Logf("node: BIRD held %d routes %s after Start", n, done.Sub(start).Round(time.Millisecond))
	return done.Sub(start)
}

func speakerSync(b *testing.B, addrs []netip.Addr) time.Duration {
	r := testutil.StartBird(b, testutil.BirdOptions{ASN: 65001, PeerASN: 65000})
	s, err := bgp.New(bgp.Config{ASN: 65000, RouterID: netip.MustParseAddr("127.0.0.1"), MaxPrefixes: len(addrs),
		Neighbors: []bgp.Neighbor{{Address: netip.MustParseAddr(r.Addr), ASN: 65001, Port: uint16(r.Port)}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Ensure(ctx)
	els := make([]firewall.Element, len(addrs))
	for i, a := range addrs {
		els[i] = firewall.Element{Addr: a, Timeout: time.Hour}
	}
	for i := 0; i < len(els); i += 10000 {
		if err := s.Add(ctx, els[i:min(i+10000, len(els))]); err != nil {
			b.Fatal(err)
		}
	}
	done := waitRoutes(b, r, len(addrs))
	b.Logf("speaker alone: BIRD held %d routes %s after Start", len(addrs), done.Sub(start).Round(time.Millisecond))
	return done.Sub(start)
}
