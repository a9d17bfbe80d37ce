package sip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dialtrap/dialtrap/internal/event"
)

// maxDatagram is the largest UDP payload: every datagram is read whole.
const maxDatagram = 65535

// listenUDP binds addr with packet-info control messages on, so each datagram says which local
// address it was sent to, and with a large receive buffer, so scan bursts are not dropped by
// the kernel before we read them.
func listenUDP(ctx context.Context, addr string, rcvbuf int, log *slog.Logger) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = setPktInfo(int(fd), network)
			// Each datagram then says how many the kernel dropped on this socket for want of
			// room: loss is counted, never silent.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
			// SO_RCVBUFFORCE passes the rmem_max cap when we run as root; otherwise the
			// kernel clamps SO_RCVBUF to rmem_max.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for SIP on UDP %s: %w (stop what uses that port or choose another with --sip-addr)", addr, err)
	}
	conn := pc.(*net.UDPConn)
	if raw, err := conn.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			got, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
			// Linux reports double the requested size (it counts bookkeeping).
			if got < rcvbuf {
				log.Warn("UDP receive buffer is smaller than asked; bursts may be dropped by the kernel (raise net.core.rmem_max or run as root)",
					"asked", rcvbuf, "got", got/2)
			}
		})
	}
	return conn, nil
}

func setPktInfo(fd int, network string) error {
	// A dual-stack IPv6 socket reports IPv4 datagrams through the IPv4 option, so set both.
	err4 := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	if network == "udp4" {
		return err4
	}
	err6 := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	if err4 != nil && err6 != nil {
		return fmt.Errorf("enable packet info on UDP socket: %w", err6)
	}
	return nil
}

// udpBatch is how many datagrams one read takes from the kernel (recvmmsg): read one at a
// time, the system call was a quarter of capture's CPU in a flood. Each holds a whole
// datagram's buffer: 512 KiB a reader.
const udpBatch = 8

// serveUDP reads datagrams until the socket is closed. Several run on one socket, so one
// parses while another waits in the kernel.
//
// One reader always reads; the others (helpers) sleep until a read fills its batch, which
// says datagrams are queued in the socket, and go back to sleep after a read that does not.
// Readers of one socket take turns at it (its read lock), so at a few datagrams a second a
// second reader only adds a hand-over, and a wake-up of a thread, to every datagram; in a
// flood all of them read.
func (s *Server) serveUDP(helper bool) {
	br, err := newBatchReader(s.udp, udpBatch, maxDatagram, 128)
	if err != nil {
		s.log.Error("UDP capture cannot read its socket", "err", err)
		return
	}
	batch := make([]datagram, udpBatch)
	localPort := uint16(0)
	if a, ok := s.udp.LocalAddr().(*net.UDPAddr); ok {
		localPort = uint16(a.Port)
	}
	// One message and one reply function per reader, reused: made per datagram, both went to
	// the heap (they reach functions called through variables), which in a flood is the
	// garbage collector's work taken from the readers.
	var m Message
	to := &udpReply{conn: s.udp}
	reply := to.send
	asleep := helper
	for {
		if asleep {
			select {
			case <-s.done:
				return
			case <-s.udpHelp:
				asleep = false
			}
		}
		n, err := br.read(batch)
		if err != nil {
			if s.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.warn.Warn("UDP read failed", "err", err)
			continue
		}
		if n == len(batch) {
			select {
			case s.udpHelp <- struct{}{}:
			default: // every helper is awake or about to be
			}
		} else if helper {
			asleep = true // the queue is drained: after these, back to sleep
		}
		for _, d := range batch[:n] {
			addr, drops := control(d.oob)
			s.noteKernelDrops(drops)
			dst := netip.AddrPortFrom(addr, localPort)
			m = Parse(d.data)
			to.src = d.src
			s.record(&m, d.data, event.UDP, d.src, dst, reply)
		}
	}
}

// udpReply sends a reply to the source of the datagram being recorded.
type udpReply struct {
	conn *net.UDPConn
	src  netip.AddrPort
}

func (r *udpReply) send(b []byte) error {
	_, err := r.conn.WriteToUDPAddrPort(b, r.src)
	return err
}

// control reads a datagram's control messages: its destination address, and the socket's
// count of datagrams the kernel dropped so far (0 until there is a drop).
func control(oob []byte) (dst netip.Addr, drops uint32) {
	for len(oob) > 0 {
		hdr, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return dst, drops
		}
		oob = rest
		switch {
		case hdr.Level == unix.IPPROTO_IP && hdr.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex (4), spec_dst (4), addr (4): addr is the header's destination.
			dst = netip.AddrFrom4([4]byte(data[8:12]))
		case hdr.Level == unix.IPPROTO_IPV6 && hdr.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			dst = netip.AddrFrom16([16]byte(data[:16])).Unmap()
		case hdr.Level == unix.SOL_SOCKET && hdr.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			drops = binary.NativeEndian.Uint32(data)
		}
	}
	return dst, drops
}

// noteKernelDrops records the socket's drop count (it only grows; readers see it in any
// order) and warns when it grew.
func (s *Server) noteKernelDrops(n uint32) {
	for {
		old := s.kernelDrops.Load()
		if uint64(n) <= old {
			return
		}
		if s.kernelDrops.CompareAndSwap(old, uint64(n)) {
			s.warn.Warn("the kernel dropped UDP datagrams before they were read (a burst beyond the socket buffer): raise --sip-read-buffer and net.core.rmem_max, or run as root",
				"dropped_total", n, "read_buffer", s.cfg.ReadBuffer)
			return
		}
	}
}

// KernelDrops is how many datagrams the kernel dropped on the UDP socket for want of room
// before the node read them, as last reported by the kernel.
func (s *Server) KernelDrops() uint64 { return s.kernelDrops.Load() }
