package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// CPUs is how many cores this process may run on (its affinity), as GOMAXPROCS reads it.
func CPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		return set.Count()
	}
	return 1
}

// ServeBareUDP is the benchmarks' baseline receiver, run as a process of its own: a UDP
// socket on port with the node's 32 MiB receive buffer and a goroutine a core that only
// counts datagrams. It prints "ready", and on SIGTERM the count, then returns.
func ServeBareUDP(port int) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 32<<20)
			}
		})
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", fmt.Sprintf(":%d", port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	conn := pc.(*net.UDPConn)
	var n atomic.Int64
	var wg sync.WaitGroup
	for range CPUs() {
		wg.Go(func() {
			buf := make([]byte, 65535)
			for {
				if _, _, err := conn.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
				n.Add(1)
			}
		})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Println("ready")
	<-sig
	conn.Close()
	wg.Wait()
	fmt.Println(n.Load())
}
