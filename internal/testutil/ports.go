package testutil

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// PickPort is a port free now for both TCP and UDP on host and on the wildcard address,
// chosen at random below Linux's ephemeral range (32768 on). A tool or daemon the test
// starts binds it a moment later; a port from the ephemeral range could be taken by then by
// any ":0" listener or outgoing connection of a test running beside it ("address already in
// use"). Where the program under test can listen on port 0 and say where, prefer that.
func PickPort(host string) (int, error) {
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if free(host, port) && (host == "" || free("", port)) {
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP between 20000 and 32000")
}

// FreePort is PickPort for a test: it fails the test when no port is free.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	port, err := PickPort(host)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func free(host string, port int) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// StableListener listens on 127.0.0.1 at a port below the ephemeral range, for a server
// a test takes down and brings back on the same address: while it is down, no outgoing
// connection of another test can take its port.
func StableListener(t testing.TB) net.Listener {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "127.0.0.1"))))
		if err == nil {
			return ln
		}
	}
	t.Fatal("no listener below the ephemeral range on 127.0.0.1")
	return nil
}
