package sip

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchReader reads up to len(bufs) datagrams a system call (recvmmsg), with their source
// addresses and control messages, allocating nothing per datagram: in a flood the per-datagram
// allocations of a generic batch read made the garbage collector take CPU from the readers.
type batchReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	bufs  [][]byte
	oobs  [][]byte
}

func newBatchReader(c *net.UDPConn, n, size, oob int) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batchReader{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n), bufs: make([][]byte, n), oobs: make([][]byte, n)}
	for i := range n {
		b.bufs[i], b.oobs[i] = make([]byte, size), make([]byte, oob)
	}
	return b, nil
}

// datagram is one datagram of a batch; its slices are valid until the next read.
type datagram struct {
	data, oob []byte
	src       netip.AddrPort
}

// read waits for datagrams and returns how many it read into out (at most len(bufs)).
func (b *batchReader) read(out []datagram) (int, error) {
	for i := range b.hdrs {
		b.iovs[i] = unix.Iovec{Base: &b.bufs[i][0]}
		b.iovs[i].SetLen(len(b.bufs[i]))
		h := &b.hdrs[i].Hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&b.names[i])), Namelen: unix.SizeofSockaddrInet6,
			Iov: &b.iovs[i], Control: &b.oobs[i][0]}
		h.SetIovlen(1)
		h.SetControllen(len(b.oobs[i]))
		b.hdrs[i].Len = 0
	}
	var n int
	var serr error
	err := b.rc.Read(func(fd uintptr) bool {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(len(b.hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			return false // wait for the socket to be readable
		}
		if errno != 0 {
			serr = errno
			return true
		}
		n = int(r)
		return true
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	k := 0
	for i := range n {
		h := &b.hdrs[i]
		src, ok := sockaddr(&b.names[i], h.Hdr.Namelen)
		if !ok {
			continue
		}
		out[k] = datagram{data: b.bufs[i][:h.Len], oob: b.oobs[i][:h.Hdr.Controllen], src: src}
		k++
	}
	return k, nil
}

// sockaddr reads a source address the kernel wrote (IPv4 or IPv6).
func sockaddr(sa *unix.RawSockaddrInet6, n uint32) (netip.AddrPort, bool) {
	raw := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	port := binary.BigEndian.Uint16(raw[2:4])
	switch sa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[4:8])), port), true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	}
	return netip.AddrPort{}, false
}
