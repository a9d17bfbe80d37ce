package syslog

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
)

func TestLineOverUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := Open("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := []*event.Event{
		{SourceIP: "192.0.2.7", SIPMethod: "OPTIONS", SIPUserAgent: "sipsak 0.9.8.1"},
		{SourceIP: "2001:db8::7", SIPMethod: "", SIPUserAgent: "evil\x1b[2J, Source IP: 10.9.9.9"},
	}
	if err := s.Write(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	// <13> is facility user (1) * 8 + notice (5); the ident carries the PID.
	want := []string{
		`^<13>\w{3} [ \d]\d \d\d:\d\d:\d\d dialtrap\[` + strconv.Itoa(os.Getpid()) + `\]: Source IP: 192\.0\.2\.7, Method: OPTIONS, Agent: sipsak 0\.9\.8\.1\n?$`,
		`^<13>.* dialtrap\[\d+\]: Source IP: 2001:db8::7, Method: , Agent: evil\?\[2J, Source IP: 10\.9\.9\.9\n?$`,
	}
	buf := make([]byte, 2048)
	for _, re := range want {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(re).Match(buf[:n]) {
			t.Errorf("syslog line %q does not match %s", buf[:n], re)
		}
	}
}

func TestBadAddresses(t *testing.T) {
	for _, addr := range []string{"unix://", "udp://", "http://x:1", "::bad"} {
		if _, err := Open(addr); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
}

// A probe with a 70 KiB User-Agent makes one line that fits the UDP message limit, with the
// address whole and the cut marked; the events after it arrive too. (An uncut line was
// refused with "message too long", retried forever, and syslog went blind.)
func TestLongLinesFitUDP(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := Open("udp://" + conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	huge := &event.Event{SourceIP: "2001:db8::7", SIPMethod: strings.Repeat("M", 300), SIPUserAgent: strings.Repeat("é", 35<<10)}
	evs := []*event.Event{huge, {SourceIP: "192.0.2.8", SIPMethod: "OPTIONS", SIPUserAgent: "sipsak"}}
	if err := s.Write(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 70<<10)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	first := string(buf[:n])
	if n > MaxUDP || !strings.Contains(first, "Source IP: 2001:db8::7, Method: MMM") ||
		!strings.Contains(first, Truncated+", Agent: éé") || !strings.HasSuffix(strings.TrimSuffix(first, "\n"), "é"+Truncated) || !utf8.ValidString(first) {
		t.Errorf("%d-byte message %.120q...%q", n, first, first[max(0, n-40):])
	}
	n, _, err = conn.ReadFrom(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "Source IP: 192.0.2.8, Method: OPTIONS, Agent: sipsak") {
		t.Errorf("the next line: %q %v", buf[:n], err)
	}
}

func TestLineCaps(t *testing.T) {
	e := &event.Event{SourceIP: "192.0.2.7", SIPMethod: "INVITE", SIPUserAgent: "friendly-scanner"}
	if got := Line(e, 100); got != "Source IP: 192.0.2.7, Method: INVITE, Agent: friendly-scanner" {
		t.Errorf("short line changed: %q", got)
	}
	for _, max := range []int{200, 959, 8123} {
		long := &event.Event{SourceIP: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", SIPMethod: strings.Repeat("x", 1000), SIPUserAgent: strings.Repeat("a✓", 5000)}
		got := Line(long, max)
		if len(got) > max || !strings.HasPrefix(got, "Source IP: 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff, Method: ") || !utf8.ValidString(got) {
			t.Errorf("max %d: %d bytes %.100q", max, len(got), got)
		}
	}
}

// failing is a syslog writer that fails the lines fail says.
type failing struct {
	fail  func(line string) error
	lines []string
}

func (f *failing) Notice(l string) error {
	if err := f.fail(l); err != nil {
		return err
	}
	f.lines = append(f.lines, l)
	return nil
}
func (f *failing) Close() error { return nil }

// "Message too long" fails that event alone; a broken connection fails the sink from that
// event on, and the hub retries.
func TestWriteErrorsPerEventAndPerSink(t *testing.T) {
	evs := []*event.Event{{SourceIP: "192.0.2.1"}, {SourceIP: "192.0.2.2"}, {SourceIP: "192.0.2.3"}}
	for _, c := range []struct {
		err     error
		partial bool
	}{
		{syscall.EMSGSIZE, false},
		{&net.OpError{Op: "write", Err: syscall.ECONNREFUSED}, true},
	} {
		w := &failing{fail: func(l string) error {
			if strings.Contains(l, "192.0.2.2") {
				return c.err
			}
			return nil
		}}
		s := &Sink{w: w, maxLine: MaxUDP}
		err := s.Write(context.Background(), evs)
		var be *hub.BadEventError
		var pe *hub.PartialError
		switch {
		case c.partial && (!errors.As(err, &pe) || pe.Done != 1):
			t.Errorf("%v: %v, want PartialError after 1", c.err, err)
		case !c.partial && (!errors.As(err, &be) || be.Index != 1):
			t.Errorf("%v: %v, want BadEventError for event 1", c.err, err)
		}
	}
}
