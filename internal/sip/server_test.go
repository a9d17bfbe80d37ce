package sip

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/fold"
	"github.com/dialtrap/dialtrap/internal/netsource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct {
	srv    *Server
	events chan *event.Event
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{events: make(chan *event.Event, 1000)}
	if cfg.Addr == "" {
		cfg.Addr = ":0" // wildcard: the destination must come from packet info
	}
	cfg.NodeID, cfg.AppVersion = "node-1", "test"
	cfg.Publish = func(e *event.Event) { h.events <- e }
	if cfg.TLSAddr != "" {
		tc, err := TLSConfig("", "", t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig = tc
	}
	h.srv = New(cfg)
	if err := h.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.srv.Close(context.Background()) })
	return h
}

func (h *harness) port(t *testing.T) string {
	_, p, _ := net.SplitHostPort(h.srv.UDPAddr().String())
	return p
}

func (h *harness) next(t *testing.T) *event.Event {
	t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event recorded")
		return nil
	}
}

func TestUDPDestinationFromPacketInfo(t *testing.T) {
	h := start(t, Config{})
	msg := readMsg(t, "svmap-options.sip")
	for _, dst := range []string{"127.0.0.5", "127.0.0.1", "::1"} {
		c, err := net.Dial("udp", net.JoinHostPort(dst, h.port(t)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		local := c.LocalAddr().(*net.UDPAddr)
		e := h.next(t)
		c.Close()
		if e.DestinationIP != dst || e.DestinationPort != h.srv.UDPAddr().(*net.UDPAddr).Port {
			t.Errorf("sent to %s: destination %s:%d", dst, e.DestinationIP, e.DestinationPort)
		}
		if e.SourceIP != local.IP.String() || e.SourcePort != local.Port {
			t.Errorf("source %s:%d, want %s", e.SourceIP, e.SourcePort, local)
		}
		if e.Transport != event.UDP || e.CollectedMethod != event.Passive || e.SIPMethod != "OPTIONS" ||
			e.CalledNumber != "100" || e.SIPUserAgent != "friendly-scanner" || e.SIPMessage != string(msg) ||
			e.NodeID != "node-1" {
			t.Errorf("event %+v", e)
		}
	}
}

func TestUDPOddDatagrams(t *testing.T) {
	h := start(t, Config{Responsive: true})
	c, err := net.Dial("udp", "127.0.0.1:"+h.port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := append([]byte("OPTIONS sip:7@x SIP/2.0\r\nTo: <sip:7@x>\r\nX-Pad: "), bytes.Repeat([]byte("p"), 60000)...)
	big = append(big, "\r\n\r\n"...)
	for _, tt := range []struct {
		name, method, number, agent string
		payload                     []byte
	}{
		{"empty", "", "", "", nil},
		{"garbage", "", "", "", readMsg(t, "garbage-tls-hello.bin")},
		{"response", "", "100", "NOT_FOUND", readMsg(t, "response-200.sip")},
		{"60 KB", "OPTIONS", "7", "NOT_FOUND", big},
	} {
		if _, err := c.Write(tt.payload); err != nil {
			t.Fatal(err)
		}
		e := h.next(t)
		stored, length := event.StoredMessage(tt.payload)
		if e.SIPMethod != tt.method || e.CalledNumber != tt.number || e.SIPUserAgent != tt.agent ||
			e.SIPMessage != stored || e.SIPMessageLength != length {
			t.Errorf("%s: method %q number %q agent %q, %d bytes kept of %d (length %d)", tt.name, e.SIPMethod,
				e.CalledNumber, e.SIPUserAgent, len(e.SIPMessage), len(tt.payload), e.SIPMessageLength)
		}
	}
	// None of those is a request with the headers a reply needs, so nothing came back.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 100)); err == nil {
		t.Errorf("got a %d-byte reply to a non-request", n)
	}
}

func TestUDPResponsiveAndPassive(t *testing.T) {
	for _, responsive := range []bool{true, false} {
		h := start(t, Config{Responsive: responsive})
		c, err := net.Dial("udp", "127.0.0.1:"+h.port(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(readMsg(t, "svmap-invite.sip")); err != nil {
			t.Fatal(err)
		}
		e := h.next(t)
		want := map[bool]string{true: event.Responsive, false: event.Passive}[responsive]
		if e.CollectedMethod != want {
			t.Errorf("collected_method %q, want %q", e.CollectedMethod, want)
		}
		buf := make([]byte, 2048)
		var codes []int
		for {
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			codes = append(codes, Parse(buf[:n]).StatusCode)
		}
		c.Close()
		if responsive && (len(codes) != 2 || codes[0] != 100 || codes[1] != 404) {
			t.Errorf("responsive INVITE got %v, want [100 404]", codes)
		}
		if !responsive && len(codes) != 0 {
			t.Errorf("passive mode sent %v", codes)
		}
	}
}

func TestTCPFraming(t *testing.T) {
	h := start(t, Config{Responsive: true})
	c, err := net.Dial("tcp", "127.0.0.1:"+h.port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	invite := readMsg(t, "sipp-invite.sip") // has a 129-byte body
	opts := readMsg(t, "sipsak-options.sip")
	// Two messages in one write, then a keep-alive, then one split in three writes.
	if _, err := c.Write(append(append([]byte{}, invite...), opts...)); err != nil {
		t.Fatal(err)
	}
	for _, part := range [][]byte{[]byte("\r\n\r\n"), opts[:10], opts[10:50], opts[50:]} {
		if _, err := c.Write(part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // paced on purpose: each part arrives in a read of its own
	}
	for i, want := range [][]byte{invite, opts, opts} {
		e := h.next(t)
		if e.SIPMessage != string(want) || e.Transport != event.TCP {
			t.Errorf("message %d: %s %q", i, e.Transport, e.SIPMessage)
		}
	}
	// Replies: 100 and 404 for the INVITE, 200 for each OPTIONS, all on the connection.
	var codes []int
	rd := make([]byte, 0, 8192)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(codes) < 4 {
		tmp := make([]byte, 4096)
		n, err := c.Read(tmp)
		if err != nil {
			t.Fatalf("after replies %v: %v", codes, err)
		}
		rd = append(rd, tmp[:n]...)
		for {
			end := HeaderEnd(rd)
			if end < 0 {
				break
			}
			codes = append(codes, Parse(rd[:end]).StatusCode)
			rd = rd[end:]
		}
	}
	if want := []int{100, 404, 200, 200}; !equalInts(codes, want) {
		t.Errorf("TCP replies %v, want %v", codes, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTLS(t *testing.T) {
	h := start(t, Config{TLSAddr: "127.0.0.1:0", Responsive: true})
	c, err := tls.Dial("tcp", h.srv.TLSAddr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(readMsg(t, "svmap-options.sip")); err != nil {
		t.Fatal(err)
	}
	e := h.next(t)
	if e.Transport != event.TLS || e.SIPMethod != "OPTIONS" || e.DestinationIP != "127.0.0.1" {
		t.Errorf("event %+v", e)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil || Parse(buf[:n]).StatusCode != 200 {
		t.Errorf("TLS reply %q, %v", buf[:n], err)
	}
}

// Silent connections and a byte-a-second trickle from one address must not stop another
// client from being served; the trickle is cut off at the message timeout and what it sent
// is recorded.
func TestSlowAndSilentClients(t *testing.T) {
	h := start(t, Config{MaxConnsPerIP: 8, MaxConns: 64, MessageTimeout: time.Second, IdleTimeout: 30 * time.Second})
	addr := "127.0.0.1:" + h.port(t)
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	var silent []net.Conn
	for range 50 {
		c, err := attacker.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	trickleDialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	trickle, err := trickleDialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer trickle.Close()
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		for _, b := range []byte("OPTIONS sip:55@x SIP/2.0\r\n") {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			if _, err := trickle.Write([]byte{b}); err != nil {
				return // cut off by the server: expected
			}
		}
	}()
	defer func() { close(stop); <-trickled }()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(readMsg(t, "sipsak-options.sip")); err != nil {
		t.Fatal(err)
	}
	var legit, partial bool
	for !legit || !partial {
		e := h.next(t)
		switch e.SourceIP {
		case "127.0.0.1":
			legit = e.SIPMethod == "OPTIONS"
		case "127.0.0.3":
			partial = strings.HasPrefix("OPTIONS sip:55@x SIP/2.0\r\n", e.SIPMessage) && e.SIPMessage != ""
		default:
			t.Errorf("event from silent client %s: %q", e.SourceIP, e.SIPMessage)
		}
	}
	h.srv.connMu.Lock()
	fromAttacker := h.srv.perIP[netsource.Of(netipAddr("127.0.0.2"))]
	h.srv.connMu.Unlock()
	// The silent ones stay open until the idle timeout: exactly the per-IP cap of them.
	if fromAttacker != 8 {
		t.Errorf("%d connections held from one IP, want the cap of 8", fromAttacker)
	}
}

func TestBindConflict(t *testing.T) {
	h := start(t, Config{Addr: "127.0.0.1:0"})
	srv := New(Config{Addr: h.srv.UDPAddr().String(), Publish: func(*event.Event) {}})
	err := srv.Start(context.Background())
	srv.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--sip-addr") {
		t.Fatalf("second bind: %v", err)
	}
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// When the readers cannot keep up and the socket buffer overflows, the kernel drops datagrams;
// the node counts them from the kernel's own count, so what was received plus what the kernel
// dropped is what was sent.
func TestKernelDropsAreCounted(t *testing.T) {
	release := make(chan struct{})
	var got atomic.Int64
	srv := New(Config{Addr: "127.0.0.1:0", ReadBuffer: 4096, NodeID: "n", AppVersion: "t",
		Publish: func(*event.Event) { got.Add(1); <-release }})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	c, err := net.Dial("udp", srv.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 2000
	msg := []byte("OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n\r\n" + strings.Repeat("x", 400))
	for range sent {
		c.Write(msg) // the readers are stuck in Publish: the buffer fills, the kernel drops
	}
	close(release)
	// The queued datagrams are read; the kernel stamps each with the drops before it was
	// queued, so one more datagram, sent after them, carries the final count.
	received := func() uint64 { return srv.Received() }
	for last := uint64(1 << 62); received() != last; {
		last = received()
		time.Sleep(100 * time.Millisecond)
	}
	before := received()
	c.Write(msg)
	deadline := time.Now().Add(5 * time.Second)
	for received() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.KernelDrops() == 0 {
		t.Fatal("no drop counted with a 4 KiB buffer and stuck readers")
	}
	if total := received() + srv.KernelDrops(); total != sent+1 {
		t.Errorf("received %d + dropped %d = %d, want the %d sent", received(), srv.KernelDrops(), total, sent+1)
	}
	t.Logf("received %d, kernel dropped %d of %d", received(), srv.KernelDrops(), sent+1)
}

// With a folder, a datagram alike the first of an open group makes no event: it is counted
// there, and the group's end passes one event on for all of them. Responsive replies still go
// to every one.
func TestFoldedDatagramsMakeOneEvent(t *testing.T) {
	h := &harness{events: make(chan *event.Event, 1000)}
	f := fold.New(fold.Config{Window: time.Hour, Publish: func(e *event.Event) { h.events <- e }})
	h.srv = New(Config{Addr: "127.0.0.1:0", NodeID: "node-1", AppVersion: "test", Responsive: true, Fold: f,
		Publish: func(*event.Event) { t.Error("Publish called with a folder set") }})
	if err := h.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer h.srv.Close(context.Background())
	c, err := net.Dial("udp", "127.0.0.1:"+h.port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := readMsg(t, "svmap-options.sip")
	other := bytes.ReplaceAll(msg, []byte("sip:100@"), []byte("sip:101@"))
	// The reply goes before the event is made, and each UDP reader is a goroutine: a probe is
	// sent once the one before it has been recorded (its event passed on, or counted in a
	// group), or two readers would race to open the group.
	var passed []*event.Event
	for i, m := range [][]byte{msg, msg, msg, other, msg, msg} {
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 4096)); err != nil {
			t.Fatalf("no reply to a probe: %v", err)
		}
		waitFor(t, func() bool { return h.srv.Received() == uint64(i+1) })
		if i == 0 || i == 3 {
			passed = append(passed, h.next(t)) // Received counts it before it is passed on
		}
	}
	first, second := passed[0], passed[1]
	if first.CalledNumber != "100" || second.CalledNumber != "101" || first.RepeatCount != 0 || second.RepeatCount != 0 {
		t.Fatalf("passed at once: %s ×%d and %s ×%d, want 100 and 101 once each", first.CalledNumber, first.Weight(), second.CalledNumber, second.Weight())
	}
	if n := h.srv.Received(); n != 6 {
		t.Errorf("%d messages received, want 6", n)
	}
	f.Close()
	folded := h.next(t)
	if folded.CalledNumber != "100" || folded.RepeatCount != 4 || folded.UUID == first.UUID || folded.SIPMessage != first.SIPMessage {
		t.Errorf("folded event %s ×%d (uuid %s, first %s), want 100 standing for the 4 probes after the first",
			folded.CalledNumber, folded.RepeatCount, folded.UUID, first.UUID)
	}
	select {
	case e := <-h.events:
		t.Errorf("one event too many: %+v", e)
	default:
	}
}
