package policy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func dialTCP(t testing.TB, a *Agent) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", a.TCPAddr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tcpRequest is request over TCP, with a body so that framing by Content-Length matters.
func tcpRequest(ruri, body string) string {
	msg := request("INVITE", ruri, 5060)
	msg = strings.Replace(msg, "SIP/2.0/UDP", "SIP/2.0/TCP", 1)
	msg = strings.Replace(msg, "Content-Length: 0\r\n\r\n", "Content-Type: application/sdp\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body, 1)
	return msg
}

// readReplies reads n replies framed by Content-Length.
func readReplies(t testing.TB, c net.Conn, n int) []string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for range n {
		var b strings.Builder
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %d replies: %v (%q)", len(out), err, b.String())
			}
			b.WriteString(l)
			if l == "\r\n" {
				break
			}
		}
		out = append(out, b.String()) // replies have no body
	}
	return out
}

const sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

func TestTCPFraming(t *testing.T) {
	a := startAgent(t, Config{})
	clean := tcpRequest("sip:0046812110000@pbx", sdp)
	bad := tcpRequest("sip:0046812118532@pbx", sdp)

	t.Run("split writes", func(t *testing.T) {
		c := dialTCP(t, a)
		// Byte runs that cut the start line, the empty line and the body.
		for i := 0; i < len(clean); i += 7 {
			if _, err := c.Write([]byte(clean[i:min(i+7, len(clean))])); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		r := readReplies(t, c, 1)
		if sip.Parse([]byte(r[0])).StatusCode != 302 || header(r[0], "Contact") != "<sip:0046812110000@pbx>" {
			t.Fatalf("reply:\n%s", r[0])
		}
		if want := ";rport=" + strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port) + ";received=127.0.0.1"; !strings.HasSuffix(header(r[0], "Via"), want) {
			t.Errorf("top Via %q, want it to end %q", header(r[0], "Via"), want)
		}
	})
	t.Run("two messages in one write, with keep-alive CRLFs", func(t *testing.T) {
		c := dialTCP(t, a)
		if _, err := c.Write([]byte("\r\n\r\n" + clean + bad)); err != nil {
			t.Fatal(err)
		}
		r := readReplies(t, c, 2)
		if sip.Parse([]byte(r[0])).StatusCode != 302 || sip.Parse([]byte(r[1])).StatusCode != 403 {
			t.Fatalf("replies:\n%s\n%s", r[0], r[1])
		}
	})
	t.Run("many on one connection", func(t *testing.T) {
		c := dialTCP(t, a)
		go func() {
			for range 50 {
				if _, err := c.Write([]byte(clean)); err != nil {
					return
				}
			}
		}()
		if r := readReplies(t, c, 50); len(r) != 50 {
			t.Fatal(len(r))
		}
	})
}

func TestTCPLimits(t *testing.T) {
	a := startAgent(t, Config{MaxConns: 3, MaxMessage: 4096, IdleTimeout: 300 * time.Millisecond, MessageTimeout: 300 * time.Millisecond})
	clean := tcpRequest("sip:0046812110000@pbx", "")
	closedSoon := func(t *testing.T, c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		// A reset is a close too: the agent closes with unread input.
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection not closed by the agent: %v", err)
		}
	}
	t.Run("oversized body", func(t *testing.T) {
		c := dialTCP(t, a)
		msg := strings.Replace(clean, "Content-Length: 0", "Content-Length: 70000", 1)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		closedSoon(t, c)
	})
	t.Run("oversized headers", func(t *testing.T) {
		c := dialTCP(t, a)
		_, _ = c.Write([]byte("INVITE sip:1@x SIP/2.0\r\nX-Pad: " + strings.Repeat("a", 5000)))
		closedSoon(t, c)
	})
	t.Run("unreadable length", func(t *testing.T) {
		c := dialTCP(t, a)
		_, _ = c.Write([]byte(strings.Replace(clean, "Content-Length: 0", "Content-Length: -1", 1)))
		closedSoon(t, c)
	})
	t.Run("garbage is dropped, the connection lives", func(t *testing.T) {
		c := dialTCP(t, a)
		_, _ = c.Write([]byte("HELLO\r\n\r\n" + clean))
		if r := readReplies(t, c, 1); sip.Parse([]byte(r[0])).StatusCode != 302 {
			t.Fatalf("reply:\n%s", r[0])
		}
	})
	t.Run("half-sent message", func(t *testing.T) {
		c := dialTCP(t, a)
		_, _ = c.Write([]byte(clean[:40]))
		closedSoon(t, c)
	})
	t.Run("idle", func(t *testing.T) {
		c := dialTCP(t, a)
		closedSoon(t, c)
	})
	t.Run("connection limit", func(t *testing.T) {
		// An agent of its own with a long idle timeout: with 300 ms, a slow machine could
		// close the first connection before the fourth is dialled, and admit the fourth.
		b := startAgent(t, Config{MaxConns: 3, MaxMessage: 4096, IdleTimeout: 30 * time.Second, MessageTimeout: 30 * time.Second})
		var conns []net.Conn
		for range 3 {
			c := dialTCP(t, b)
			_, _ = c.Write([]byte(clean))
			readReplies(t, c, 1) // admitted and served
			conns = append(conns, c)
		}
		c := dialTCP(t, b)
		closedSoon(t, c)
		for _, c := range conns {
			c.Close()
		}
		testutil.Eventually(t, "the refusal counted", 3*time.Second, func() bool { return b.Status().Dropped["tcp_conn_limit"] == 1 })
	})
	testutil.Eventually(t, "counters", 3*time.Second, func() bool {
		d := a.Status().Dropped
		return d["tcp_oversize"] == 2 && d["tcp_bad_length"] == 1 && d["tcp_message_timeout"] == 1 &&
			d["tcp_idle"] >= 1 && d["unparsable"] == 1
	})
	t.Log(a.Status().Dropped)
}

// One address holds at most MaxConnsPerIP connections, so it cannot take every slot; the
// others are still served.
func TestTCPConnectionsPerAddress(t *testing.T) {
	a := startAgent(t, Config{MaxConns: 8, MaxConnsPerIP: 2, IdleTimeout: 10 * time.Second})
	for range 2 {
		dialTCP(t, a)
	}
	testutil.Eventually(t, "two connections admitted", 2*time.Second, func() bool { return a.Status().TCPConnections == 2 })
	third := dialTCP(t, a)
	third.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third connection from the same address was served")
	}
	if got := a.Status().Dropped["tcp_conn_per_ip_limit"]; got != 1 {
		t.Fatalf("tcp_conn_per_ip_limit = %d, want 1", got)
	}
	// Another address still gets in.
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}, Timeout: 2 * time.Second}).Dial("tcp", a.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(tcpRequest("sip:0046812110000@pbx", sdp))); err != nil {
		t.Fatal(err)
	}
	if r := readReplies(t, c, 1)[0]; !strings.HasPrefix(r, "SIP/2.0 302") {
		t.Fatalf("the other address got %q", r)
	}
}

// Sources outside --policy-allow get no answer, over UDP or TCP, and are counted.
func TestAllowList(t *testing.T) {
	a := startAgent(t, Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}})
	cl := newClient(t, a) // from 127.0.0.1: not allowed
	if _, err := cl.conn.WriteToUDP([]byte(request("INVITE", "sip:0046812110000@pbx", cl.port())), cl.to); err != nil {
		t.Fatal(err)
	}
	cl.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, _, err := cl.conn.ReadFromUDP(make([]byte, 4096)); err == nil {
		t.Fatalf("a source outside the allow list got %d bytes", n)
	}
	c := dialTCP(t, a)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a TCP connection from outside the allow list was served")
	}
	if got := a.Status().Dropped["not_allowed"]; got != 2 {
		t.Fatalf("not_allowed = %d, want 2", got)
	}
	// The allowed address is answered.
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	msg := request("INVITE", "sip:0046812110000@pbx", u.LocalAddr().(*net.UDPAddr).Port)
	msg = strings.Replace(msg, "Via: SIP/2.0/UDP 127.0.0.1:", "Via: SIP/2.0/UDP 127.0.0.9:", 1)
	u.WriteToUDP([]byte(msg), cl.to)
	u.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := u.ReadFromUDP(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 302") {
		t.Fatalf("the allowed source got %q, %v", buf[:n], err)
	}
}

// 0.0.0.0 is IPv4 only (Go would bind it as the dual-stack wildcard); an empty host is both.
func TestListenFamily(t *testing.T) {
	for addr, want := range map[string]string{"0.0.0.0:5070": "4", "127.0.0.1:0": "4", ":5070": "", "[::]:5070": "", "[::1]:0": "", "localhost:5070": ""} {
		if got := family(addr); got != want {
			t.Errorf("family(%q) = %q, want %q", addr, got, want)
		}
	}
	a := startAgent(t, Config{Addr: "0.0.0.0:0"})
	if _, err := net.DialTimeout("tcp6", "[::1]:"+strconv.Itoa(a.TCPAddr().(*net.TCPAddr).Port), time.Second); err == nil {
		t.Error("an agent on 0.0.0.0 accepted an IPv6 connection")
	}
}
