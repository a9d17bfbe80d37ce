// Package testutil holds what the tests of several packages need alike: waiting on a
// condition instead of a fixed time, and a stand-in for the syslog daemon's socket. Only tests
// import it.
package testutil

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Eventually polls ok until it holds, and fails the test if it does not within the time.
func Eventually(t testing.TB, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SyslogReceiver is a unix datagram socket standing in for /dev/log: a node given
// --syslog-addr unix://<Path> writes its lines here.
type SyslogReceiver struct {
	Path string

	mu   sync.Mutex
	msgs []string
}

// NewSyslogReceiver listens until the test ends.
func NewSyslogReceiver(t testing.TB) *SyslogReceiver {
	t.Helper()
	// Unix socket paths are limited to about 100 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "dtsl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &SyslogReceiver{Path: filepath.Join(dir, "log.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: r.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(8 << 20) // a flood of probes is a flood of lines
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, string(buf[:n]))
			r.mu.Unlock()
		}
	}()
	return r
}

// Lines returns every message received so far.
func (r *SyslogReceiver) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// Has reports whether a message received so far contains s.
func (r *SyslogReceiver) Has(s string) bool {
	for _, l := range r.Lines() {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// SyncBuffer collects what concurrent writers write (a logger, a dry run, a child process's
// output) for a test to read.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
