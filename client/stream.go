package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Operations of the change stream.
const (
	OpAdd       = "add"       // put IP in the set (again: with a new timeout)
	OpDel       = "del"       // IP's TTL ran out
	OpSync      = "sync"      // the set as of Cursor was sent (Full: the whole set)
	OpCursor    = "cursor"    // the changes before Cursor were sent
	OpHeartbeat = "heartbeat" // nothing changed
)

// Change is one line of the change stream.
type Change struct {
	Op      string
	IP      string        // add, del
	Timeout time.Duration // add: time left before the element expires; 0: no expiry
	Cursor  string        // sync, cursor, heartbeat: where to resume from
	Full    bool          // sync: the whole set was sent (not only changes since a cursor)
	Time    time.Time     // sync, heartbeat: the node's clock
}

// StreamOptions choose the set a change stream follows (the filters of /feeds/*) and where
// it resumes. Empty fields take the node's defaults.
type StreamOptions struct {
	Verified  string        // "only" (default: proven sources) or "any"
	Source    string        // "trusted" (default), "local" or "all"
	MinCount  int           // only keys seen at least this often
	Since     string        // only keys last seen since (a date, RFC 3339, or "24h")
	TTL       string        // only keys last seen within it, each with its time left ("24h")
	Cursor    string        // resume after this cursor (the last one read); empty: the whole set
	Heartbeat time.Duration // the node's idle heartbeat (1s to 5m; default 15s)
}

func (o StreamOptions) query() string {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("verified", o.Verified)
	set("source", o.Source)
	set("since", o.Since)
	set("ttl", o.TTL)
	set("cursor", o.Cursor)
	if o.MinCount > 0 {
		q.Set("min_count", strconv.Itoa(o.MinCount))
	}
	if o.Heartbeat > 0 {
		q.Set("heartbeat", o.Heartbeat.String())
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// maxStreamLine bounds one line of the change stream.
const maxStreamLine = 64 << 10

// Stream follows the node's change stream (GET /feeds/stream) over one connection: the set
// as add lines and a sync (or, from o.Cursor, only what changed since), then the changes as
// they happen. It ends when ctx is done (without an error), when the node closes the stream
// (io.ErrUnexpectedEOF), or on an error; the error is the sequence's last pair. To resume
// after a break, keep the last Cursor seen and call Stream again with it, or use Follow.
func (c *Client) Stream(ctx context.Context, o StreamOptions) iter.Seq2[Change, error] {
	return func(yield func(Change, error) bool) {
		stopped := false
		err := c.open(ctx, "/feeds/stream"+o.query(), func(resp *http.Response) error {
			r := bufio.NewReaderSize(resp.Body, 4096)
			for {
				line, err := readLine(r)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					return fmt.Errorf("read the change stream of %s: %w", resp.Request.URL, err)
				}
				var m struct {
					Op      string `json:"op"`
					IP      string `json:"ip"`
					Timeout int64  `json:"timeout"`
					Cursor  string `json:"cursor"`
					Full    bool   `json:"full"`
					Time    string `json:"time"`
				}
				if err := json.Unmarshal(line, &m); err != nil {
					return fmt.Errorf("a line of the change stream of %s: %w", resp.Request.URL, err)
				}
				ch := Change{Op: m.Op, IP: m.IP, Timeout: time.Duration(m.Timeout) * time.Second,
					Cursor: m.Cursor, Full: m.Full, Time: parseTime(m.Time)}
				if !yield(ch, nil) {
					stopped = true
					return nil
				}
			}
		})
		if err != nil && !stopped && ctx.Err() == nil {
			yield(Change{}, err)
		}
	}
}

// readLine reads one line (without its newline), refusing one longer than maxStreamLine.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxStreamLine {
			return nil, fmt.Errorf("a line longer than %d bytes", maxStreamLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return nil, err
		}
		return line[:len(line)-1], nil
	}
}

// Follow follows the change stream for good: it calls fn with every change and, when the
// connection breaks, reconnects from the last cursor seen (with back-off from MinBackoff to
// MaxBackoff), so a node's restart costs the changes since, not the whole set. It returns
// when ctx is done (nil), when fn returns an error (that error), or on an error that a retry
// cannot mend (401, a bad filter, a route the node does not have).
func (c *Client) Follow(ctx context.Context, o StreamOptions, fn func(Change) error) error {
	fails := 0
	for {
		var ferr error
		got := false
		for ch, err := range c.Stream(ctx, o) {
			if err != nil {
				var api *APIError
				if errors.As(err, &api) && !transient(api.Status) {
					return err
				}
				if errors.Is(err, ErrBadBaseURL) {
					return err
				}
				break
			}
			got = true
			if ch.Cursor != "" {
				o.Cursor = ch.Cursor
			}
			if ferr = fn(ch); ferr != nil {
				return ferr
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if got {
			fails = 0
		}
		fails++
		t := time.NewTimer(c.backoff(min(fails, 16)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
