// Package ratelog passes each distinct log message at most once per interval, so that a scan
// or a flood that repeats one failure thousands of times a second cannot fill the operator's
// log, while a different failure in the same moment (an accept error during a connection
// flood) still gets through. What was held back is counted and reported with the next line.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxKeys bounds the table of messages: they are constants in the code, so this is only a
// guard against a caller that puts variable text in a message.
const maxKeys = 256

// Logger wraps a slog.Logger. The zero value is not usable; use New.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed uint64
}

// New returns a Logger that passes each message at most once per every.
func New(log *slog.Logger, every time.Duration) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Logger{log: log, every: every, now: time.Now, keys: map[string]*entry{}}
}

// Warn logs msg at warning level unless the same msg was logged less than the interval ago.
func (l *Logger) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Error logs msg at error level, limited like Warn.
func (l *Logger) Error(msg string, args ...any) { l.Log(slog.LevelError, msg, args...) }

// Info logs msg at info level, limited like Warn.
func (l *Logger) Info(msg string, args ...any) { l.Log(slog.LevelInfo, msg, args...) }

// Log logs msg at level, limited like Warn. A line that follows held-back ones says how many
// were held back ("suppressed").
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	if n, ok := l.Allow(level, msg); ok {
		l.Emit(level, msg, n, args...)
	}
}

// Allow reports whether msg may be logged at level now, and how many were held back since
// the last time. A hot path calls it before building the line's attributes, then Emit.
func (l *Logger) Allow(level slog.Level, msg string) (suppressed uint64, ok bool) {
	if !l.log.Enabled(context.Background(), level) {
		return 0, false
	}
	return l.allow(msg)
}

// Emit logs a line Allow let through.
func (l *Logger) Emit(level slog.Level, msg string, suppressed uint64, args ...any) {
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// allow reports whether msg may be logged now, and how many were held back since the last.
func (l *Logger) allow(msg string) (uint64, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.keys[msg]
	if !ok {
		if len(l.keys) >= maxKeys {
			clear(l.keys)
		}
		l.keys[msg] = &entry{last: now}
		return 0, true
	}
	if now.Sub(e.last) < l.every {
		e.suppressed++
		return 0, false
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return n, true
}

// Reset lets the next msg through at once: the start of a new run of failures deserves a
// line even if the last run ended a moment ago.
func (l *Logger) Reset(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.keys[msg]; ok {
		e.last = time.Time{}
	}
}
