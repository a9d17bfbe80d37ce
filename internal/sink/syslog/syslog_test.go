package syslog

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
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
