// Package spool is a crash-safe on-disk queue of records (lines without a newline in them):
// the webhook keeps events there until the endpoint takes them, and the store's wrapper
// (internal/storespool) keeps them there while the database is away. One process at a time
// may use a spool directory.
package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/dialtrap/dialtrap/internal/fsutil"
)

// The spool is a directory of segment files, each a run of records (one line each), and
// beside each segment an ack file of 4-byte little-endian offsets of the records that were
// delivered. A segment whose records are all acked is deleted. Appends are single write(2)
// calls, so a process killed mid-append leaves at most one cut record at the end of the
// newest segment, which Open cuts off (counted in Stats.Torn); an ack lost the same way only
// means that record is handed out again (delivery is at least once). Nothing is fsynced but
// at Close: what a process wrote survives its crash, not the machine's.
const (
	segExt = ".jsonl"
	ackExt = ".acked"
)

// ErrClosed is returned once the spool is closed.
var ErrClosed = errors.New("spool closed")

// ErrFull is returned by Append on a spool opened with RefuseWhenFull when the records would
// take it past MaxBytes.
var ErrFull = errors.New("spool full")

// Options configure a spool.
type Options struct {
	// MaxBytes caps the segments on disk.
	MaxBytes int64
	// RefuseWhenFull makes Append fail with ErrFull rather than go over MaxBytes. By default
	// the oldest segments are dropped instead (counted in Stats.Dropped): the webhook prefers
	// fresh events, the store's wrapper must never lose one it said it kept.
	RefuseWhenFull bool
	// Name names the spool in errors and logs ("webhook spool"); Flag is the option that
	// sets its size, named in errors.
	Name, Flag string
	// Log receives the warning about a record cut by a crash; nil for none.
	Log *slog.Logger
}

// Spool is a crash-safe on-disk queue of records awaiting delivery.
type Spool struct {
	dir    string
	opts   Options
	segMax int64 // a segment is closed for appends at this size
	lock   *os.File

	mu      sync.Mutex
	segs    []*segment // oldest first; the last takes appends
	w       *os.File   // the last segment, open for appends
	total   int64      // bytes of all segments
	pending int64      // records not yet acked
	dropped uint64     // records removed by the size cap before delivery
	torn    uint64     // records cut off at Open: a crash in the middle of their append
	wake    chan struct{}
	closed  bool
}

type segment struct {
	seq      uint64
	size     int64 // bytes of whole records
	records  int
	acked    int
	inflight int
	preAcked map[uint32]bool // acked before this process started; skipped by Next
	next     int64           // offset of the next record Next returns
	r        *os.File        // read side, opened on first Next
	ack      *os.File        // opened on first Ack
	dead     bool            // dropped by the cap or fully acked: its records are gone

	// rbuf holds the segment's bytes from offset roff, read ahead by Next.
	rbuf []byte
	roff int64
}

// Record is one spooled record handed out by Next; pass it back to Ack once delivered.
type Record struct {
	Data []byte // the record, without the newline
	seg  *segment
	off  uint32
}

// Open opens (creating if needed) the spool in dir, which one process at a time may use.
func Open(dir string, o Options) (*Spool, error) {
	if o.Name == "" {
		o.Name = "spool"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the %s directory (check --data-dir permissions): %w", o.Name, err)
	}
	lock, pid, err := fsutil.Lock(filepath.Join(dir, "lock"))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%s %s is in use by another dialtrap process (pid %d): give each node its own --data-dir", o.Name, dir, pid)
	}
	if err != nil {
		return nil, fmt.Errorf("open the %s: %w", o.Name, err)
	}
	s := &Spool{
		dir: dir, opts: o, lock: lock, wake: make(chan struct{}),
		segMax: min(8<<20, max(o.MaxBytes/8, 64<<10)),
	}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	if s.torn > 0 {
		o.Log.Warn(o.Name+": cut records torn by a crash in the middle of their append (never reported as spooled)",
			"dir", dir, "torn", s.torn, "pending", s.pending)
	}
	return s, nil
}

func (s *Spool) path(seq uint64, ext string) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016x%s", seq, ext))
}

// load reads the segments left by an earlier run and starts a new one for appends.
func (s *Spool) load() error {
	names, err := filepath.Glob(filepath.Join(s.dir, "*"+segExt))
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, n := range names {
		seq, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), segExt), 16, 64)
		if err == nil {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var last uint64
	for _, seq := range seqs {
		last = seq
		g, err := s.loadSegment(seq)
		if err != nil {
			return err
		}
		if g.records == g.acked {
			s.remove(g)
			continue
		}
		s.segs = append(s.segs, g)
		s.total += g.size
		s.pending += int64(g.records - g.acked)
	}
	return s.rotate(last + 1)
}

func (s *Spool) loadSegment(seq uint64) (*segment, error) {
	name := s.path(seq, segExt)
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read %s segment (check the permissions of %s): %w", s.opts.Name, s.dir, err)
	}
	whole := bytes.LastIndexByte(data, '\n') + 1
	if whole < len(data) {
		// Cut by a crash mid-append: the record was never acknowledged to the hub as spooled.
		if err := os.Truncate(name, int64(whole)); err != nil {
			return nil, fmt.Errorf("repair %s segment %s (is the disk read-only?): %w", s.opts.Name, name, err)
		}
		data = data[:whole]
		s.torn++
	}
	g := &segment{seq: seq, size: int64(whole), records: bytes.Count(data, []byte{'\n'})}
	acks, err := os.ReadFile(s.path(seq, ackExt))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s acks: %w", s.opts.Name, err)
	}
	g.preAcked = make(map[uint32]bool, len(acks)/4)
	for i := 0; i+4 <= len(acks); i += 4 { // a cut last entry is ignored: sent again
		off := binary.LittleEndian.Uint32(acks[i:])
		if int64(off) < g.size && (off == 0 || data[off-1] == '\n') && !g.preAcked[off] {
			g.preAcked[off] = true
		}
	}
	g.acked = len(g.preAcked)
	return g, nil
}

// rotate closes the append segment and starts segment seq. Callers hold mu (or own s).
func (s *Spool) rotate(seq uint64) error {
	if s.w != nil {
		if err := s.w.Close(); err != nil {
			return fmt.Errorf("close %s segment: %w", s.opts.Name, err)
		}
		s.w = nil
	}
	f, err := os.OpenFile(s.path(seq, segExt), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s segment (is the disk full or read-only?): %w", s.opts.Name, err)
	}
	s.w = f
	s.segs = append(s.segs, &segment{seq: seq, preAcked: map[uint32]bool{}})
	return nil
}

// Append adds records (each without a newline) in one write. On error nothing of the batch
// is kept, so the caller may retry the whole batch.
func (s *Spool) Append(records [][]byte) error {
	var buf []byte
	for _, r := range records {
		buf = append(append(buf, r...), '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.opts.RefuseWhenFull && s.total+int64(len(buf)) > s.opts.MaxBytes {
		return fmt.Errorf("%s in %s holds %d of %d bytes (%s): %w", s.opts.Name, s.dir, s.total, s.opts.MaxBytes, s.opts.Flag, ErrFull)
	}
	g := s.segs[len(s.segs)-1]
	if g.size > 0 && g.size+int64(len(buf)) > s.segMax {
		if err := s.rotate(g.seq + 1); err != nil {
			return err
		}
		g = s.segs[len(s.segs)-1]
	}
	if g.size+int64(len(buf)) > 1<<32-1 {
		return fmt.Errorf("%s: a batch larger than 4 GiB", s.opts.Name)
	}
	if _, err := s.w.Write(buf); err != nil {
		// Take back what part of the batch reached the file, so a retry adds no duplicates.
		if terr := s.w.Truncate(g.size); terr != nil {
			err = errors.Join(err, terr)
		}
		return fmt.Errorf("append to %s in %s (is the disk full?): %w", s.opts.Name, s.dir, err)
	}
	g.size += int64(len(buf))
	g.records += len(records)
	s.total += int64(len(buf))
	s.pending += int64(len(records))
	if !s.opts.RefuseWhenFull {
		s.enforceCap()
	}
	close(s.wake)
	s.wake = make(chan struct{})
	return nil
}

// enforceCap drops the oldest segments while the spool is over its cap; the segment taking
// appends is kept.
func (s *Spool) enforceCap() {
	for s.total > s.opts.MaxBytes && len(s.segs) > 1 {
		g := s.segs[0]
		lost := g.records - g.acked
		s.dropped += uint64(lost)
		s.pending -= int64(lost)
		s.total -= g.size
		s.segs = s.segs[1:]
		s.remove(g)
	}
}

// remove deletes a segment's files; records of it still in flight are then given up.
func (s *Spool) remove(g *segment) {
	g.dead = true
	g.rbuf = nil
	for _, f := range []*os.File{g.r, g.ack} {
		if f != nil {
			f.Close()
		}
	}
	os.Remove(s.path(g.seq, segExt))
	os.Remove(s.path(g.seq, ackExt))
}

// Next returns the oldest record not yet handed out, waiting for one until ctx ends.
func (s *Spool) Next(ctx context.Context) (Record, error) {
	for {
		rec, ok, wake, err := s.tryNext()
		if ok || err != nil {
			return rec, err
		}
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-wake:
		}
	}
}

// TryNext is Next without the wait: ok is false when no record is ready.
func (s *Spool) TryNext() (rec Record, ok bool, err error) {
	rec, ok, _, err = s.tryNext()
	return rec, ok, err
}

func (s *Spool) tryNext() (Record, bool, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Record{}, false, nil, ErrClosed
	}
	rec, ok, err := s.next()
	return rec, ok, s.wake, err
}

func (s *Spool) next() (Record, bool, error) {
	for i := 0; i < len(s.segs); i++ {
		g := s.segs[i]
		for g.next < g.size {
			off := g.next
			data, err := s.read(g, off)
			if err != nil {
				return Record{}, false, err
			}
			g.next += int64(len(data)) + 1
			if g.preAcked[uint32(off)] {
				delete(g.preAcked, uint32(off))
				continue
			}
			g.inflight++
			return Record{Data: data, seg: g, off: uint32(off)}, true, nil
		}
		if i < len(s.segs)-1 && s.finishIfDone(g) {
			i-- // g left s.segs
		}
	}
	return Record{}, false, nil
}

// readAhead is how much of a segment Next reads at once: one read(2) for a hundred records
// rather than one each.
const readAhead = 64 << 10

// read returns a copy of the record at off of g; the segment holds only whole records up to
// g.size, and the bytes before g.size never change.
func (s *Spool) read(g *segment, off int64) ([]byte, error) {
	if g.r == nil {
		f, err := os.Open(s.path(g.seq, segExt))
		if err != nil {
			return nil, fmt.Errorf("open %s segment: %w", s.opts.Name, err)
		}
		g.r = f
	}
	if off >= g.roff && off < g.roff+int64(len(g.rbuf)) {
		if i := bytes.IndexByte(g.rbuf[off-g.roff:], '\n'); i >= 0 {
			return bytes.Clone(g.rbuf[off-g.roff : off-g.roff+int64(i)]), nil
		}
	}
	n := min(readAhead, g.size-off)
	for {
		if int64(cap(g.rbuf)) < n {
			g.rbuf = make([]byte, n)
		}
		m, err := g.r.ReadAt(g.rbuf[:n], off)
		g.rbuf, g.roff = g.rbuf[:m], off // short only if the file was cut under the spool
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s segment: %w", s.opts.Name, err)
		}
		if i := bytes.IndexByte(g.rbuf, '\n'); i >= 0 {
			return bytes.Clone(g.rbuf[:i]), nil
		}
		if off+n >= g.size || int64(m) < n {
			return nil, fmt.Errorf("%s segment %016x: record at %d has no end", s.opts.Name, g.seq, off)
		}
		n = min(n*4, g.size-off) // a record longer than the read-ahead
	}
}

// Ack marks records delivered (or given up for good) so they are never handed out again. The
// offsets of each segment are recorded in one write.
func (s *Spool) Ack(rs ...Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed // the files are closed: these records are handed out again next start
	}
	var errs []error
	for len(rs) > 0 {
		g := rs[0].seg
		var offs []byte
		n := 0
		for _, r := range rs {
			if r.seg != g {
				break
			}
			n++
			g.inflight--
			if !g.dead {
				g.acked++
				s.pending--
				offs = binary.LittleEndian.AppendUint32(offs, r.off)
			}
		}
		rs = rs[n:]
		if len(offs) == 0 {
			continue
		}
		var err error
		if g.ack == nil {
			g.ack, err = os.OpenFile(s.path(g.seq, ackExt), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		}
		if err == nil {
			_, err = g.ack.Write(offs)
		}
		if err != nil {
			errs = append(errs, err)
		}
		if g != s.segs[len(s.segs)-1] {
			s.finishIfDone(g)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("record delivered records in the %s (they may be delivered again): %w", s.opts.Name, err)
	}
	return nil
}

// Release hands records back undelivered (shutdown): they stay spooled for the next start.
func (s *Spool) Release(rs ...Record) {
	s.mu.Lock()
	for _, r := range rs {
		r.seg.inflight--
	}
	s.mu.Unlock()
}

// Live reports whether r is still spooled; false once the size cap dropped its segment.
func (s *Spool) Live(r Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !r.seg.dead
}

// finishIfDone deletes a closed segment once every record of it is acked.
func (s *Spool) finishIfDone(g *segment) bool {
	if g.dead || g.acked < g.records || g.next < g.size {
		return false
	}
	s.total -= g.size
	s.segs = slices.DeleteFunc(s.segs, func(x *segment) bool { return x == g })
	s.remove(g)
	return true
}

// Stats are the spool's counters.
type Stats struct {
	Pending  int64  // records not yet acked (handed out or not)
	Bytes    int64  // of the segments on disk
	Dropped  uint64 // records removed by the size cap
	Torn     uint64 // records cut off at Open, torn by a crash mid-append
	Segments int
}

// Stats returns the current counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Pending: s.pending, Bytes: s.total, Dropped: s.dropped, Torn: s.torn, Segments: len(s.segs)}
}

// Close syncs and releases the files; undelivered records stay on disk for the next start.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.wake)
	var errs []error
	for _, g := range s.segs {
		if g.ack != nil {
			errs = append(errs, g.ack.Sync(), g.ack.Close())
		}
		if g.r != nil {
			errs = append(errs, g.r.Close())
		}
	}
	if s.w != nil {
		errs = append(errs, s.w.Sync(), s.w.Close())
	}
	// An empty append segment is left for the next start to clean up with the others.
	errs = append(errs, s.lock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close the %s in %s: %w", s.opts.Name, s.dir, err)
	}
	return nil
}
