package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dialtrap/dialtrap/internal/sip"
)

// listenUDP binds addr with a large receive buffer, so a burst of calls is not dropped by the
// kernel before a reader gets to it. (The same as internal/sip's, which is unexported.)
func listenUDP(ctx context.Context, addr string, rcvbuf int, log *slog.Logger) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			// SO_RCVBUFFORCE passes the rmem_max cap when we run as root; otherwise the
			// kernel clamps SO_RCVBUF to rmem_max.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}
		})
	}}
	pc, err := lc.ListenPacket(ctx, "udp"+family(addr), addr)
	if err != nil {
		return nil, fmt.Errorf("policy agent: listen on UDP %s: %w (stop what uses that port or choose another with --policy-addr)", addr, err)
	}
	conn := pc.(*net.UDPConn)
	if raw, err := conn.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			got, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
			// Linux reports double the requested size (it counts bookkeeping).
			if got < rcvbuf {
				log.Warn("policy agent: UDP receive buffer is smaller than asked; bursts may be dropped by the kernel (raise net.core.rmem_max or run as root)",
					"asked", rcvbuf, "got", got/2)
			}
		})
	}
	return conn, nil
}

// family is "4" for an IPv4 host (0.0.0.0 included, which Go would otherwise bind as the
// dual-stack wildcard), else "" (both).
func family(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if ip, perr := netip.ParseAddr(host); err == nil && perr == nil && ip.Is4() {
		return "4"
	}
	return ""
}

// serveUDP reads, decides and answers datagrams until the socket is closed. Several run on
// one socket; each owns its buffers, so nothing is allocated per datagram but what the
// lookups need.
func (a *Agent) serveUDP() {
	buf := make([]byte, 65536)
	out := make([]byte, 0, 2048)
	for {
		n, src, err := a.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if a.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			a.warn.Warn("policy agent: UDP read failed", "err", err)
			continue
		}
		if !a.allowed(src.Addr()) {
			a.st.dropped[dropNotAllowed].Add(1)
			continue
		}
		if n > a.cfg.MaxMessage {
			a.st.dropped[dropTooLarge].Add(1)
			continue
		}
		reply, dst := a.handle(buf[:n], src, true, out[:0])
		if reply == nil {
			continue
		}
		if _, err := a.udp.WriteToUDPAddrPort(reply, dst); err != nil {
			a.warn.Warn("policy agent: UDP reply not sent", "to", dst, "err", err)
		}
		if cap(reply) <= 64<<10 {
			out = reply[:0] // keep a grown buffer, within reason
		}
	}
}

func (a *Agent) acceptLoop() {
	for {
		c, err := a.tcp.Accept()
		if err != nil {
			if a.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little rather than spin.
			a.warn.Warn("policy agent: TCP accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !a.admit(c) {
			c.Close()
			continue
		}
		a.spawn(func() {
			defer a.release(c)
			a.serveConn(c)
		})
	}
}

func (a *Agent) admit(c net.Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	ip := sip.AddrPort(c.RemoteAddr()).Addr()
	if !a.allowed(ip) {
		a.st.dropped[dropNotAllowed].Add(1)
		return false
	}
	if len(a.conns) >= a.cfg.MaxConns {
		a.st.dropped[dropConnLimit].Add(1)
		a.warn.Warn("policy agent: TCP connection refused: limit reached", "from", c.RemoteAddr().String(), "max", a.cfg.MaxConns)
		return false
	}
	if a.perIP[ip] >= a.cfg.MaxConnsPerIP {
		a.st.dropped[dropConnPerIP].Add(1)
		a.warn.Warn("policy agent: TCP connection refused: this address holds its share", "from", ip, "max_per_ip", a.cfg.MaxConnsPerIP)
		return false
	}
	a.perIP[ip]++
	a.conns[c] = struct{}{}
	a.st.conns.Add(1)
	return true
}

func (a *Agent) release(c net.Conn) {
	c.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conns, c)
	ip := sip.AddrPort(c.RemoteAddr()).Addr()
	if a.perIP[ip]--; a.perIP[ip] <= 0 {
		delete(a.perIP, ip)
	}
	a.st.conns.Add(-1)
}

// connBufs holds the read buffers of TCP connections between uses.
var connBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// serveConn reads messages framed by Content-Length and answers each on the connection,
// until the peer closes, idles for IdleTimeout, takes longer than MessageTimeout to send a
// message it has begun, or sends one over MaxMessage (its framing is then lost).
func (a *Agent) serveConn(c net.Conn) {
	src := sip.AddrPort(c.RemoteAddr())
	bp := connBufs.Get().(*[]byte)
	base := *bp
	defer func() {
		if cap(base) == 4096 {
			connBufs.Put(&base)
		}
	}()
	var out []byte
	pending := 0              // bytes of base holding unread input
	var msgStart time.Time    // when the first byte of the pending message came
	limit := a.cfg.MaxMessage // a whole message, headers and body
	for {
		// Answer every whole message already read.
		for {
			buf := base[:pending]
			skip := 0
			for skip < len(buf) && (buf[skip] == '\r' || buf[skip] == '\n') {
				skip++
			}
			n, err := frame(buf[skip:], limit)
			if err != nil {
				reason := dropTCPOversize
				if errors.Is(err, errBadLength) {
					reason = dropTCPBadLength
				}
				a.st.dropped[reason].Add(1)
				a.warn.Warn("policy agent: TCP connection closed: "+err.Error(), "from", src.String())
				return
			}
			if n == 0 {
				if skip > 0 {
					pending = copy(base, buf[skip:])
				}
				break
			}
			reply, _ := a.handle(buf[skip:skip+n], src, false, out[:0])
			if reply != nil {
				_ = c.SetWriteDeadline(time.Now().Add(a.cfg.MessageTimeout))
				if _, err := c.Write(reply); err != nil {
					return
				}
				out = reply[:0]
			}
			pending = copy(base, buf[skip+n:])
			msgStart = time.Time{}
		}
		if pending == len(base) {
			// frame said the message is whole within limit: grow up to it.
			nb := make([]byte, min(2*len(base), limit+4))
			copy(nb, base[:pending])
			base = nb
		}
		if pending == 0 {
			msgStart = time.Time{}
			_ = c.SetReadDeadline(time.Now().Add(a.cfg.IdleTimeout))
		} else {
			if msgStart.IsZero() {
				msgStart = time.Now()
			}
			_ = c.SetReadDeadline(msgStart.Add(a.cfg.MessageTimeout))
		}
		n, err := c.Read(base[pending:])
		pending += n
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if pending == 0 {
					a.st.dropped[dropTCPIdle].Add(1)
				} else {
					a.st.dropped[dropTCPSlow].Add(1)
				}
			}
			return
		}
	}
}

var (
	errTooLarge  = errors.New("message larger than the limit")
	errBadLength = errors.New("unreadable Content-Length")
)

// frame returns the length of the first whole message in buf: headers up to the empty line,
// then Content-Length bytes of body (none when the header is absent). It returns 0 while the
// message is incomplete, and an error when it cannot fit in limit bytes or its length is
// unreadable: the stream cannot be framed after that.
func frame(buf []byte, limit int) (int, error) {
	end := sip.HeaderEnd(buf)
	if end < 0 {
		if len(buf) > limit {
			return 0, errTooLarge
		}
		return 0, nil
	}
	cl := contentLength(buf[:end])
	switch {
	case cl == -1:
		cl = 0
	case cl < 0:
		return 0, errBadLength
	}
	total := end + cl
	if total > limit {
		return 0, errTooLarge
	}
	if len(buf) < total {
		return 0, nil
	}
	return total, nil
}
