package sip

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/netsource"
)

func (s *Server) acceptLoop(ln net.Listener, transport string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little rather than spin.
			s.warn.Warn("SIP accept failed", "transport", transport, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		src := AddrPort(c.RemoteAddr())
		// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: one host is one source, and
		// so is one IPv6 /64 (one subscriber's addresses).
		ip := netsource.Of(src.Addr())
		if transport == event.TLS {
			c = tls.Server(c, s.cfg.TLSConfig)
		}
		if !s.admit(c, ip) {
			c.Close()
			continue
		}
		s.spawn(func() {
			defer s.release(c, ip)
			s.serveStream(c, transport, src)
		})
	}
}

// admit enforces the connection caps. A scanner that opens connections and sends nothing
// uses up its own per-IP share, not everyone's.
func (s *Server) admit(c net.Conn, ip netip.Prefix) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.closing() {
		return false
	}
	if s.nconns >= s.cfg.MaxConns || s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		s.warn.Warn("SIP connection refused: limit reached", "from", ip, "open", s.nconns,
			"from_this_ip", s.perIP[ip], "max", s.cfg.MaxConns, "max_per_ip", s.cfg.MaxConnsPerIP)
		return false
	}
	s.nconns++
	s.perIP[ip]++
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) release(c net.Conn, ip netip.Prefix) {
	c.Close()
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.nconns--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	delete(s.conns, c)
}

// serveStream reads SIP messages framed by Content-Length until the peer closes, goes idle,
// or takes longer than MessageTimeout to send one message (a byte-a-second trickle).
func (s *Server) serveStream(c net.Conn, transport string, src netip.AddrPort) {
	dst := AddrPort(c.LocalAddr())
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(s.cfg.MessageTimeout))
		if err := tc.Handshake(); err != nil {
			s.log.Debug("TLS handshake failed", "from", src, "err", err)
			return
		}
	}
	reply := func(b []byte) error {
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.MessageTimeout))
		_, err := c.Write(b)
		return err
	}
	base := make([]byte, 4096) // grows up to just over MaxMessage, only if a message needs it
	buf := base[:0]            // pending bytes: always a prefix of base after compaction
	var msgStart time.Time     // when the first byte of the pending message arrived
	for {
		// Hand over every complete message already buffered.
		for {
			buf = buf[skipBlankLines(buf):]
			msg, m, ok := frame(buf)
			if !ok {
				break
			}
			s.record(&m, msg, transport, src, dst, reply)
			buf = buf[len(msg):]
			msgStart = time.Time{}
		}
		if len(buf) >= event.MaxMessage {
			// No complete message within 64 KiB: keep what came, and drop the connection,
			// whose framing is lost.
			m := Parse(buf[:event.MaxMessage])
			s.record(&m, buf[:event.MaxMessage], transport, src, dst, reply)
			return
		}
		if len(buf) == len(base) {
			base = make([]byte, min(2*len(base), event.MaxMessage+1024))
		}
		buf = base[:copy(base, buf)]
		if len(buf) == 0 {
			msgStart = time.Time{}
			_ = c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		} else {
			if msgStart.IsZero() {
				msgStart = time.Now()
			}
			_ = c.SetReadDeadline(msgStart.Add(s.cfg.MessageTimeout))
		}
		n, err := c.Read(base[len(buf):])
		buf = base[:len(buf)+n]
		if err != nil {
			if rest := buf[skipBlankLines(buf):]; len(rest) > 0 {
				// A half-sent message is a probe too: keep it.
				m := Parse(rest)
				s.record(&m, rest, transport, src, dst, nil)
			}
			return
		}
	}
}

// frame returns the first whole message in buf: headers up to the empty line, then
// Content-Length bytes of body (none if the header is absent, as for most probes).
func frame(buf []byte) (msg []byte, m Message, ok bool) {
	end := HeaderEnd(buf)
	if end < 0 {
		return nil, Message{}, false
	}
	m = Parse(buf[:end])
	total := end + max(m.ContentLength, 0)
	if total > event.MaxMessage {
		return nil, Message{}, false // wait for MaxMessage bytes, then record what came
	}
	if len(buf) < total {
		return nil, Message{}, false
	}
	return buf[:total], m, true
}

// HeaderEnd returns the length of the header section including its empty line, or -1.
func HeaderEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// AddrPort is a connection's address as a netip.AddrPort (the policy agent's too).
func AddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
