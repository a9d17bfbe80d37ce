// Package syslog writes one line per event to syslog in the form Fail2Ban filters match:
// "Source IP: <ip>, Method: <METHOD>, Agent: <user agent>", ident dialtrap, facility user,
// priority notice. Lines are capped to what the transport carries (a probe can send a 64 KiB
// User-Agent): 1,024 bytes a message over UDP (RFC 3164; RFC 5426 only promises 480 to 2,048
// and relays cut at 1,024), 8,192 over the local socket, unix sockets and TCP (rsyslog's
// default maximum). The method and the agent are cut, with a marker; the address never is.
package syslog

import (
	"context"
	"errors"
	"fmt"
	"log/syslog"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
)

// Tag is the syslog ident.
const Tag = "dialtrap"

// Message size limits per transport, header included.
const (
	MaxUDP    = 1024
	MaxStream = 8192
)

// Truncated marks a field cut to fit the line into its message.
const Truncated = "[truncated]"

// maxMethod bounds the method in a line that must be cut: a real method is a short token.
const maxMethod = 64

// writer is what the sink needs of log/syslog's Writer.
type writer interface {
	Notice(string) error
	Close() error
}

// Sink is the syslog sink.
type Sink struct {
	mu      sync.Mutex
	w       writer
	maxLine int // the longest line that fits a message after its header
}

// Open connects to syslog. addr is empty for the local syslog daemon, or a URL:
// unix:///path/to/socket, udp://host:port or tcp://host:port.
func Open(addr string) (*Sink, error) {
	network, raddr, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	w, err := syslog.Dial(network, raddr, syslog.LOG_NOTICE|syslog.LOG_USER, Tag)
	if err != nil {
		if addr == "" {
			return nil, fmt.Errorf("connect to the local syslog socket (/dev/log): %w: no syslog daemon seems to be running; start one (rsyslog, syslog-ng or systemd-journald) or send the lines elsewhere with --syslog-addr (udp://host:514, tcp://host:514 or unix:///path/to/socket)", err)
		}
		return nil, fmt.Errorf("connect to syslog at %s: %w (is the syslog server running there? check --syslog-addr)", addr, err)
	}
	return &Sink{w: w, maxLine: maxLine(network)}, nil
}

// maxLine is the room a line has in one message over network: the transport's limit less the
// header log/syslog puts before it ("<13>" and a timestamp, for remote ones the host name,
// then "dialtrap[pid]: ").
func maxLine(network string) int {
	host, _ := os.Hostname()
	header := len("<13>2006-01-02T15:04:05.999999999-07:00 ") + len(host) + len(" "+Tag+"[4194304]: ")
	if network == "udp" {
		return MaxUDP - header
	}
	return MaxStream - header
}

func parseAddr(addr string) (network, raddr string, err error) {
	if addr == "" {
		return "", "", nil
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", "", fmt.Errorf("syslog address %q: %w", addr, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return "", "", fmt.Errorf("syslog address %q names no socket path: use unix:///dev/log", addr)
		}
		return "unixgram", u.Path, nil
	case "udp", "tcp":
		if u.Host == "" {
			return "", "", fmt.Errorf("syslog address %q names no host: use %s://host:514", addr, u.Scheme)
		}
		return u.Scheme, u.Host, nil
	default:
		return "", "", fmt.Errorf("syslog address %q: scheme must be unix, udp or tcp", addr)
	}
}

// Line is the message logged for e, at most max bytes (0: no limit). Control characters an
// attacker put in the method or user agent become '?', so one probe is always exactly one
// line; when the line is too long the method and then the agent are cut and marked.
func Line(e *event.Event, max int) string {
	method, agent := clean(e.SIPMethod), clean(e.SIPUserAgent)
	line := "Source IP: " + e.SourceIP + ", Method: " + method + ", Agent: " + agent
	if max <= 0 || len(line) <= max {
		return line
	}
	if len(method) > maxMethod {
		method = cut(method, maxMethod-len(Truncated)) + Truncated
	}
	fixed := len("Source IP: " + e.SourceIP + ", Method: " + method + ", Agent: ")
	if room := max - fixed; len(agent) > room {
		agent = cut(agent, room-len(Truncated)) + Truncated
	}
	return "Source IP: " + e.SourceIP + ", Method: " + method + ", Agent: " + agent
}

// cut returns the longest prefix of s of at most n bytes that ends on a character boundary.
func cut(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// Name implements hub.Sink.
func (s *Sink) Name() string { return "syslog" }

// Write implements hub.Sink. It reports how far it got, so a retry sends no line twice. A
// line the transport refuses as too long fails that event only (hub.BadEventError); any other
// error is the connection's, and the hub retries from that event.
func (s *Sink) Write(_ context.Context, batch []*event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range batch {
		if err := s.w.Notice(Line(e, s.maxLine)); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				return &hub.BadEventError{Index: i, Err: fmt.Errorf("syslog line for %s: %w", e.SourceIP, err)}
			}
			return &hub.PartialError{Done: i, Err: fmt.Errorf("write to syslog: %w", err)}
		}
	}
	return nil
}

// Notice writes one line of another kind than an event (a hit alert), cut to fit a message.
func (s *Sink) Notice(line string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.w.Notice(cut(clean(line), s.maxLine)); err != nil {
		return fmt.Errorf("write to syslog: %w", err)
	}
	return nil
}

// Close closes the connection.
func (s *Sink) Close() error { return s.w.Close() }
