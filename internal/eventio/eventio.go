// Package eventio reads and writes events in the interchange formats operators move data
// with: JSON lines (dialtrap's JSON log and the reference product's), CSV, and SQLite
// databases (the reference product's "honey" table, or another dialtrap node's store). It is
// what `dialtrap export` and `dialtrap import` are made of.
package eventio

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Format is an interchange format.
type Format string

// The formats.
const (
	JSONLines Format = "jsonl"
	CSV       Format = "csv"
	SQLite    Format = "sqlite"
)

// Columns are the CSV header: the event's JSON keys in contract order.
var Columns = []string{
	"app_name", "app_version", "event_timestamp", "event_uuid", "created_by_node_id",
	"collected_method", "transport_type", "source_ip", "destination_ip", "called_number",
	"sip_method", "sip_user_agent", "sip_message", "source_port", "destination_port",
}

// Writer writes events in one format.
type Writer interface {
	Write(*event.Event) error
	// Flush writes what is buffered; call it once at the end.
	Flush() error
}

// NewWriter returns a writer of JSON lines or CSV.
func NewWriter(w io.Writer, f Format) (Writer, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	switch f {
	case JSONLines:
		return &jsonWriter{w: bufio.NewWriterSize(w, 64<<10)}, nil
	case CSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(Columns); err != nil {
			return nil, err
		}
		return &csvWriter{w: cw}, nil
	}
	return nil, f.Check()
}

// Check says whether f is a format events can be exported in.
func (f Format) Check() error {
	if f != JSONLines && f != CSV {
		return fmt.Errorf("export format %q: use jsonl or csv", f)
	}
	return nil
}

type jsonWriter struct{ w *bufio.Writer }

func (j *jsonWriter) Write(e *event.Event) error {
	b, err := e.MarshalLine()
	if err != nil {
		return err
	}
	_, err = j.w.Write(b)
	return err
}

func (j *jsonWriter) Flush() error { return j.w.Flush() }

type csvWriter struct{ w *csv.Writer }

func (c *csvWriter) Write(e *event.Event) error {
	return c.w.Write([]string{
		e.AppName, e.AppVersion, e.Timestamp, e.UUID, e.NodeID, e.CollectedMethod, e.Transport,
		e.SourceIP, e.DestinationIP, e.CalledNumber, e.SIPMethod, e.SIPUserAgent, e.SIPMessage,
		strconv.Itoa(e.SourcePort), strconv.Itoa(e.DestinationPort),
	})
}

func (c *csvWriter) Flush() error {
	c.w.Flush()
	return c.w.Error()
}

// Detect tells the format of a file from its first bytes.
func Detect(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("SQLite format 3\x00")):
		return SQLite, nil
	case len(bytes.TrimSpace(head)) > 0 && bytes.TrimSpace(head)[0] == '{':
		return JSONLines, nil
	case bytes.HasPrefix(head, []byte("app_name,")):
		return CSV, nil
	case len(bytes.TrimSpace(head)) == 0:
		return JSONLines, nil // empty: nothing to import in any format
	}
	return "", fmt.Errorf("%s is not a JSON log, a CSV export or an SQLite database", path)
}

// Record is one raw record from an import source, as the source spelled its fields, before
// Normalize turns it into an event.
type Record map[string]any

func (r Record) str(keys ...string) string {
	for _, k := range keys {
		switch v := r[k].(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		case int64:
			return strconv.FormatInt(v, 10)
		case []byte:
			return string(v)
		case bool:
			return strconv.FormatBool(v)
		}
	}
	return ""
}
