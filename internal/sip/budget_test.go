package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// request is a SIP request with every header a reply echoes, about size bytes long.
func request(method, to string, size int) []byte {
	head := method + " sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n" +
		"From: <sip:a@b>;tag=1\r\nTo: " + to + "\r\nCall-ID: c\r\nCSeq: 1 " + method + "\r\n"
	pad := ""
	if n := size - len(head) - len("X: \r\n\r\n"); n > 0 {
		pad = "X: " + strings.Repeat("p", n) + "\r\n"
	}
	return []byte(head + pad + "\r\n")
}

// flood sends count requests from src and returns the replies and bytes that came back and
// the bytes sent.
func flood(t *testing.T, srv *Server, src string, msg []byte, count int) (replies, got, sent int) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(mustAP(srv.UDPAddr().String())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range count {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		sent += len(msg)
	}
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return replies, got, sent
		}
		replies++
		got += n
	}
}

func budgetServer(t *testing.T, rate float64, burst int) (*Server, *atomic.Int64) {
	t.Helper()
	var recorded atomic.Int64
	srv := New(Config{Addr: "127.0.0.1:0", Responsive: true, NodeID: "n", AppVersion: "t", ReplyRate: rate, ReplyBurst: burst,
		Publish: func(*event.Event) { recorded.Add(1) }})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv, &recorded
}

// A flood from one address gets replies at the budget's rate and never more than three
// times the bytes it sent; every probe is recorded all the same.
func TestReplyBudgetOneSource(t *testing.T) {
	srv, recorded := budgetServer(t, DefaultReplyRate, DefaultReplyBurst)
	began := time.Now()
	replies, got, sent := flood(t, srv, "127.0.0.7", request("OPTIONS", "<sip:100@127.0.0.1>", 250), 1000)
	elapsed := time.Since(began)
	t.Logf("one source: 1000 OPTIONS, %d bytes sent, %d replies, %d bytes back (%.2fx)", sent, replies, got, float64(got)/float64(sent))
	if limit := DefaultReplyBurst + int(DefaultReplyRate*elapsed.Seconds()) + 1; replies > limit || replies < DefaultReplyBurst/2 {
		t.Errorf("%d replies in %v, want at most %d", replies, elapsed, limit)
	}
	if got > AmplificationLimit*sent {
		t.Errorf("%d bytes back for %d sent", got, sent)
	}
	waitFor(t, func() bool { return recorded.Load() == 1000 })
	if n := srv.RepliesSuppressed(); n == 0 {
		t.Error("no reply counted as left out")
	}
}

// Forged small probes from many addresses: no address gets back more than three times what
// it sent, and a probe too small to answer within that is answered once its source proves it
// receives our replies (it echoes our To tag).
func TestReplyBudgetManySourcesAndSmallProbes(t *testing.T) {
	srv, recorded := budgetServer(t, DefaultReplyRate, DefaultReplyBurst)
	var sentAll, gotAll, repliesAll atomic.Int64
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// About 160 bytes each; our 200 OK to it is about 390.
			r, g, s := flood(t, srv, fmt.Sprintf("127.0.1.%d", i+1), request("OPTIONS", "<sip:100@127.0.0.1>", 0), 20)
			if g > AmplificationLimit*s {
				t.Errorf("source %d: %d bytes back for %d sent", i, g, s)
			}
			sentAll.Add(int64(s))
			gotAll.Add(int64(g))
			repliesAll.Add(int64(r))
		}()
	}
	wg.Wait()
	t.Logf("50 sources x 20 OPTIONS: %d bytes sent, %d replies, %d bytes back (%.2fx)",
		sentAll.Load(), repliesAll.Load(), gotAll.Load(), float64(gotAll.Load())/float64(sentAll.Load()))
	waitFor(t, func() bool { return recorded.Load() == 1000 })

	// A tiny request in compact header form: our 200 OK, with Server, Allow, Accept and
	// Supported, is several times as long.
	small := []byte("OPTIONS sip:1@x SIP/2.0\r\nv:x\r\nf:a\r\nTo: <sip:1@x>\r\ni:c\r\nCSeq:1 OPTIONS\r\n\r\n")
	if r, g, _ := flood(t, srv, "127.0.2.1", small, 1); r != 0 || g != 0 {
		t.Fatalf("a %d-byte probe from a new source got %d bytes back: more than %dx its size", len(small), g, AmplificationLimit)
	}
	tag := string(srv.budget.tag(mustAP("127.0.2.1:1").Addr()))
	proof := []byte(strings.Replace(string(small), "To: <sip:1@x>", "To: <sip:1@x>;tag="+tag, 1))
	if r, _, _ := flood(t, srv, "127.0.2.1", proof, 1); r != 1 {
		t.Errorf("a source that echoed our tag got %d replies, want 1", r)
	}
}

// INVITE's two replies (100 Trying, 404) take two of the budget's replies.
func TestReplyBudgetCountsEachReply(t *testing.T) {
	srv, _ := budgetServer(t, 0.001, 4)
	replies, _, _ := flood(t, srv, "127.0.0.8", request("INVITE", "<sip:100@127.0.0.1>", 600), 3)
	if replies != 4 {
		t.Errorf("3 INVITEs with a budget of 4 replies: %d replies, want 4 (2 + 2 + none)", replies)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// A To tag is a proof for an hour or two, not for the life of the process: whoever held an
// address once cannot pass for it later with the tag it was given.
func TestTagExpires(t *testing.T) {
	b := newReplyBudget(0, 0)
	src := netip.MustParseAddr("203.0.113.5")
	now := time.Now()
	tag := b.tagAt(src, now)
	echo := func(at time.Time) bool {
		m := Parse([]byte("ACK sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:100@198.51.100.1>;tag=" + string(tag) + "\r\nCall-ID: x\r\nCSeq: 1 ACK\r\n\r\n"))
		return b.check(&m, src, at).tag
	}
	if !echo(now) || !echo(now.Add(tagBucket)) {
		t.Error("the tag does not prove its source within the next hour")
	}
	if echo(now.Add(2 * tagBucket)) {
		t.Error("the tag still proves its source two hours on")
	}
}

// BenchmarkProof is what source verification adds to each UDP request in responsive mode,
// beside BenchmarkParse of the same message (the baseline): the check of its To tag and
// credentials, and the proven-address table.
func BenchmarkProof(b *testing.B) {
	bud := newReplyBudget(0, 0)
	src := netip.MustParseAddr("203.0.113.5")
	for _, c := range []struct{ name, msg string }{
		{"options-no-tag", "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:100@198.51.100.1>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\n\r\n"},
		{"ack-with-tag", "ACK sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:100@198.51.100.1>;tag=" + string(bud.tag(src)) + "\r\nCall-ID: x\r\nCSeq: 1 ACK\r\n\r\n"},
	} {
		msg := []byte(c.msg)
		b.Run(c.name+"/parse", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m := Parse(msg)
				_ = m.CalledNumber()
			}
		})
		b.Run(c.name+"/proof", func(b *testing.B) {
			m := Parse(msg)
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now()
				bud.verify(src, bud.check(&m, src, now).any(), now)
			}
		})
	}
}
