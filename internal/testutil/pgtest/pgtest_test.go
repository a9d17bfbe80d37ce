package pgtest

import (
	"net"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// The server starts on loopback, serves a fresh database per test, and comes back after a
// restart.
func TestServer(t *testing.T) {
	s := Get(t)
	u := s.Database(t)
	if !strings.HasPrefix(u, "postgres://postgres@127.0.0.1:") {
		t.Fatalf("URL %s", u)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatal("stopped server still accepts connections")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.psql("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if s.Database(t) == u {
		t.Fatal("two tests got the same database")
	}
}
