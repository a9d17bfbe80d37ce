// Package jsonlog appends each event as one compact JSON line to a file, for log shippers.
package jsonlog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
)

// Log is the JSON log sink. Each batch is written with one write call; a write that fails
// half-way is cut back, so the file never holds a partial line and a retry adds no duplicate.
type Log struct {
	path   string
	compat event.Compat // the spelling of each line (--event-compat)

	mu  sync.Mutex
	f   *os.File
	buf []byte
}

// Open opens (creating if needed) the JSON log at path for appending; each event is written
// in the spelling compat (event.CompatNone: the contract).
func Open(path string, compat event.Compat) (*Log, error) {
	l := &Log{path: path, compat: compat}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	if dir := filepath.Dir(l.path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create directory for JSON log %s: %w", l.path, err)
		}
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open JSON log %s (check the path and permissions, or set --json-log-file): %w", l.path, err)
	}
	if err := repairTail(f); err != nil {
		f.Close()
		return fmt.Errorf("repair the end of JSON log %s: %w", l.path, err)
	}
	l.f = f
	return nil
}

// repairTail removes a last line cut short by a crash (kill -9 in the middle of a write can
// leave part of a batch), so that lines appended after a restart start on a line of their
// own and every line parses. The cut events are in the store.
func repairTail(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	buf := make([]byte, 64<<10)
	for end := size; end > 0; {
		n := min(int64(len(buf)), end)
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			if cut := end - n + int64(i) + 1; cut < size {
				return f.Truncate(cut)
			}
			return nil
		}
		end -= n
	}
	if size > 0 {
		return f.Truncate(0) // no newline at all: one partial line
	}
	return nil
}

// Name implements hub.Sink.
func (l *Log) Name() string { return "jsonlog" }

// Write implements hub.Sink. An event that cannot be encoded fails alone (the events before
// it are written, and the hub skips it); a failed write fails the sink, and the hub retries.
func (l *Log) Write(_ context.Context, batch []*event.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf[:0]
	var bad error
	for i, e := range batch {
		var err error
		if b, err = e.AppendJSONCompat(b, l.compat); err != nil {
			bad = &hub.BadEventError{Index: i, Err: err}
			break
		}
		b = append(b, '\n')
	}
	l.buf = b
	if err := l.write(b); err != nil {
		return err
	}
	return bad
}

// write appends b in one write, cutting back a partial one.
func (l *Log) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	fi, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("stat JSON log %s: %w", l.path, err)
	}
	if _, err := l.f.Write(b); err != nil {
		// Cut back a partial write so the retried batch starts on a clean line.
		if terr := l.f.Truncate(fi.Size()); terr != nil {
			return fmt.Errorf("write JSON log %s: %w (and could not remove the partial line: %v)", l.path, err, terr)
		}
		return fmt.Errorf("write JSON log %s: %w", l.path, err)
	}
	if cap(l.buf) > 4<<20 {
		l.buf = nil // do not pin a huge buffer after one burst of big messages
	}
	return nil
}

// Reopen closes and reopens the file, for log rotation (SIGHUP).
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.f
	if err := l.open(); err != nil {
		return err
	}
	return old.Close()
}

// Close syncs and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	serr := l.f.Sync()
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("close JSON log %s: %w", l.path, err)
	}
	if serr != nil {
		return fmt.Errorf("sync JSON log %s: %w", l.path, serr)
	}
	return nil
}
