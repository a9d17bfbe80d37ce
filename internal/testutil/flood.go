package testutil

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/ipv4"
)

// Flood offers rate datagrams/s to dst on loopback for d, like a scanner flood. Probe i comes
// from source address Source(i % sources) (127.0.0.2 on, up to 65,000 of them) and carries
// probe(i). One unconnected socket sends every datagram, each with its source set by
// IP_PKTINFO, in sendmmsg batches paced in 1 ms slots: the sender, which is not under test,
// leaves the cores to the receiver. It returns how many datagrams the kernel took.
func Flood(ctx context.Context, dst netip.AddrPort, rate int, d time.Duration, sources int, probe func(i int64) []byte) (int64, error) {
	if sources < 1 || sources > 65000 {
		return 0, fmt.Errorf("flood: %d sources, want 1 to 65000", sources)
	}
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	oobs := make([][]byte, sources)
	for i := range oobs {
		oobs[i] = (&ipv4.ControlMessage{Src: Source(i).AsSlice()}).Marshal()
	}
	to := net.UDPAddrFromAddrPort(dst)
	const maxBatch = 64
	batch := make([]ipv4.Message, maxBatch)
	var sent int64
	start := time.Now()
	total := int64(float64(rate) * d.Seconds())
	for sent < total {
		if err := ctx.Err(); err != nil {
			return sent, err
		}
		due := min(total, int64(time.Since(start).Seconds()*float64(rate))+1)
		for sent < due {
			k := int(min(due-sent, maxBatch))
			for j := range k {
				i := sent + int64(j)
				batch[j] = ipv4.Message{Buffers: [][]byte{probe(i)}, OOB: oobs[i%int64(sources)], Addr: to}
			}
			n, err := pc.WriteBatch(batch[:k], 0)
			if err != nil {
				return sent, fmt.Errorf("flood: send: %w", err)
			}
			sent += int64(n)
		}
		time.Sleep(time.Millisecond)
	}
	return sent, nil
}

// Source is the loopback address Flood sends probe i of sources from: 127.0.0.2, 127.0.0.3, ...
func Source(i int) netip.Addr {
	n := i + 2
	return netip.AddrFrom4([4]byte{127, byte(n >> 16), byte(n >> 8), byte(n)})
}

// UDPDrops sums what the kernel dropped on this network namespace's UDP sockets bound to
// port (IPv4 and IPv6) for want of room in their receive buffers, as /proc/net/udp{,6}
// report it: the count a receiver learns only from datagrams it still reads misses drops at
// the very end of a flood.
func UDPDrops(port int) (int64, error) {
	var total int64
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 13 || !strings.HasSuffix(fields[1], suffix) {
				continue
			}
			n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: drops of %q: %w", f, line, err)
			}
			total += n
		}
	}
	return total, nil
}

// BacklogDrops sums what the kernel dropped for want of room in its per-CPU input backlog
// (/proc/net/softnet_stat, second column): loopback datagrams pass through it before any
// socket, so a burst can be lost there without a socket's count knowing.
func BacklogDrops() (int64, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0, err
	}
	var total int64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		n, err := strconv.ParseInt(fields[1], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("softnet_stat %q: %w", line, err)
		}
		total += n
	}
	return total, nil
}
