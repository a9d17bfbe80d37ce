// Package syslog writes one line per event to syslog in the form Fail2Ban filters match:
// "Source IP: <ip>, Method: <METHOD>, Agent: <user agent>", ident dialtrap, facility user,
// priority notice.
package syslog

import (
	"context"
	"fmt"
	"log/syslog"
	"net/url"
	"strings"
	"sync"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
)

// Tag is the syslog ident.
const Tag = "dialtrap"

// Sink is the syslog sink.
type Sink struct {
	mu sync.Mutex
	w  *syslog.Writer
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
	return &Sink{w: w}, nil
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

// Line is the message logged for e. Control characters an attacker put in the method or
// user agent become '?', so one probe is always exactly one line.
func Line(e *event.Event) string {
	return "Source IP: " + e.SourceIP + ", Method: " + clean(e.SIPMethod) + ", Agent: " + clean(e.SIPUserAgent)
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

// Write implements hub.Sink. It reports how far it got, so a retry sends no line twice.
func (s *Sink) Write(_ context.Context, batch []*event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range batch {
		if err := s.w.Notice(Line(e)); err != nil {
			return &hub.PartialError{Done: i, Err: fmt.Errorf("write to syslog: %w", err)}
		}
	}
	return nil
}

// Close closes the connection.
func (s *Sink) Close() error { return s.w.Close() }
