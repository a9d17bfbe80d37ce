package eventio

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/dialtrap/dialtrap/internal/event"
)

// referenceAppName is the app_name of events from the reference product's database, which
// has no such column.
const referenceAppName = "sentrypeer"

// MaxRecord is the longest JSON line or CSV record read; longer ones are skipped. An event
// holds at most a 64 KiB message, which JSON escaping can grow sixfold.
const MaxRecord = 1 << 20

// importNamespace derives stable UUIDs for records that lack a valid one, so that importing
// the same file twice still stores each record once.
var importNamespace = uuid.MustParse("6d1f5c0e-6a47-4c4e-9a0b-2f6c8e1d7a31")

// Options tune Read.
type Options struct {
	// Location is the zone of timestamps that carry none (the reference wrote local time);
	// nil means UTC.
	Location *time.Location
	// Progress, if set, is called now and then with work done and the total, in bytes for
	// files and rows for databases.
	Progress func(done, total int64)
}

// Result counts what Read found.
type Result struct {
	Records int64    // records read
	Skipped int64    // records that were not valid events
	Errors  []string // the first few reasons for skipping
}

const maxErrors = 5

func (r *Result) skip(where string, err error) {
	r.Skipped++
	if len(r.Errors) < maxErrors {
		r.Errors = append(r.Errors, where+": "+err.Error())
	}
}

// Read calls fn for every valid event in the file at path, in file order. Records that are
// not valid events are skipped and counted, never fatal; an error from fn or from reading
// the file ends the read.
func Read(ctx context.Context, path string, o Options, fn func(*event.Event) error) (Result, error) {
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Progress == nil {
		o.Progress = func(int64, int64) {}
	}
	f, err := Detect(path)
	if err != nil {
		return Result{}, err
	}
	switch f {
	case SQLite:
		return readSQLite(ctx, path, o, fn)
	case CSV:
		return readFile(ctx, path, o, fn, readCSV)
	default:
		return readFile(ctx, path, o, fn, readJSONLines)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type fileReader func(ctx context.Context, r *countingReader, size int64, o Options, res *Result, fn func(*event.Event) error) error

func readFile(ctx context.Context, path string, o Options, fn func(*event.Event) error, read fileReader) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Result{}, err
	}
	var res Result
	cr := &countingReader{r: f}
	err = read(ctx, cr, st.Size(), o, &res, fn)
	o.Progress(cr.n, st.Size())
	if err != nil {
		return res, fmt.Errorf("read %s: %w", path, err)
	}
	return res, nil
}

func readJSONLines(ctx context.Context, cr *countingReader, size int64, o Options, res *Result, fn func(*event.Event) error) error {
	br := bufio.NewReaderSize(cr, 64<<10)
	for line := 1; ; line++ {
		b, err := readLine(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		where := "line " + strconv.Itoa(line)
		if errors.Is(err, errTooLong) {
			res.Records++
			res.skip(where, err)
			continue
		}
		if err != nil {
			return err
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			continue
		}
		res.Records++
		if line%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			o.Progress(cr.n, size)
		}
		rec := make(Record, 24)
		if !decodeFlat(b, rec) {
			clear(rec) // what the fast decoder put there; the decoder fills the same map
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber()
			if err := dec.Decode(&rec); err != nil {
				res.skip(where, fmt.Errorf("not a JSON object: %w", err))
				continue
			}
		}
		e, err := Normalize(rec, b, o.Location)
		if err != nil {
			res.skip(where, err)
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

var errTooLong = fmt.Errorf("record longer than %d bytes", MaxRecord)

// readLine returns the next line without its newline; a line over MaxRecord is consumed and
// reported as errTooLong.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxRecord {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return nil, errTooLong
		}
		line = append(line, chunk...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return nil, io.EOF
			}
			return line, nil
		case err != nil:
			return nil, err
		}
		return line, nil
	}
}

func readCSV(ctx context.Context, cr *countingReader, size int64, o Options, res *Result, fn func(*event.Event) error) error {
	r := csv.NewReader(bufio.NewReaderSize(cr, 64<<10))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("CSV header: %w", err)
	}
	header = append([]string(nil), header...)
	for n := 1; ; n++ {
		row, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		where := "record " + strconv.Itoa(n)
		res.Records++
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			res.skip(where, err)
			continue
		}
		if err != nil {
			return err
		}
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			o.Progress(cr.n, size)
		}
		rec := Record{}
		raw := 0
		for i, v := range row {
			if i < len(header) {
				rec[header[i]] = v
			}
			raw += len(v)
		}
		if raw > MaxRecord {
			res.skip(where, errTooLong)
			continue
		}
		e, err := Normalize(rec, []byte(strings.Join(row, "\x00")), o.Location)
		if err != nil {
			res.skip(where, err)
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// sqliteSources are the tables an SQLite import reads, with the columns they call by our
// names.
var sqliteSources = []struct{ table, query string }{
	{"events", `SELECT event_uuid, event_timestamp, app_name, app_version, created_by_node_id,
		collected_method, transport_type, source_ip, source_port, destination_ip, destination_port,
		called_number, sip_method, sip_user_agent, sip_message FROM events ORDER BY id`},
	// The reference product's schema.
	{"honey", `SELECT event_uuid, event_timestamp, collected_method, transport_type, source_ip,
		called_number, method AS sip_method, user_agent AS sip_user_agent, sip_message,
		created_by_node_id FROM honey`},
}

func readSQLite(ctx context.Context, path string, o Options, fn func(*event.Event) error) (Result, error) {
	var res Result
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro&_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return res, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	for _, src := range sqliteSources {
		var name string
		err := db.QueryRowContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?`, src.table).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("read %s: %w", path, err)
		}
		var total int64
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+src.table).Scan(&total); err != nil {
			return res, fmt.Errorf("read table %s of %s: %w", src.table, path, err)
		}
		query := src.query
		if src.table == "events" {
			// Columns later schemas added, read where the database has them.
			for _, c := range []string{"sip_message_length", "source_verified", "tool", "ua_spoofed", "payload"} {
				var n int
				if db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('events') WHERE name = ?`, c).Scan(&n); n == 1 {
					query = strings.Replace(query, " FROM events", ", "+c+" FROM events", 1)
				}
			}
		}
		err = readRows(ctx, db, query, total, src.table == "honey", o, &res, fn)
		o.Progress(res.Records, total)
		if err != nil {
			return res, fmt.Errorf("read table %s of %s: %w", src.table, path, err)
		}
		return res, nil
	}
	return res, fmt.Errorf("%s has neither an events table (dialtrap) nor a honey table (the reference product): nothing to import", path)
}

func readRows(ctx context.Context, db *sql.DB, query string, total int64, reference bool, o Options, res *Result, fn func(*event.Event) error) error {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var raw bytes.Buffer
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		res.Records++
		if res.Records%1024 == 0 {
			o.Progress(res.Records, total)
		}
		rec := make(Record, len(cols)+1)
		for i, c := range cols {
			rec[c] = vals[i]
		}
		if reference {
			rec["app_name"] = referenceAppName
		}
		// The row's bytes name a record without a valid UUID (Normalize derives one from
		// them); formatting every row's columns cost as much as the rest of its reading.
		raw.Reset()
		if _, err := uuid.Parse(rec.str("event_uuid")); err != nil {
			for _, v := range vals {
				fmt.Fprintf(&raw, "%v\x00", v)
			}
		}
		e, err := Normalize(rec, raw.Bytes(), o.Location)
		if err != nil {
			res.skip("row "+strconv.FormatInt(res.Records, 10), err)
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Normalize turns a record from any source into a valid event, or says why it cannot. raw
// identifies the record (its bytes) for records without a valid event_uuid.
func Normalize(r Record, raw []byte, loc *time.Location) (*event.Event, error) {
	ts, err := ParseTimestamp(r.str("event_timestamp"), loc)
	if err != nil {
		return nil, err
	}
	e := &event.Event{
		AppName:         clean(r.str("app_name")),
		AppVersion:      clean(r.str("app_version")),
		Timestamp:       ts,
		UUID:            r.str("event_uuid"),
		NodeID:          clean(r.str("created_by_node_id")),
		CollectedMethod: strings.ToLower(clean(r.str("collected_method"))),
		Transport:       strings.ToUpper(strings.TrimSpace(r.str("transport_type"))),
		CalledNumber:    clean(r.str("called_number")),
		SIPMethod:       clean(r.str("sip_method", "method")),
		SIPUserAgent:    clean(r.str("sip_user_agent", "user_agent")),
	}
	var length int
	e.SIPMessage, length = event.StoredMessage([]byte(r.str("sip_message")))
	// A record cut before (by this node or another) says how long the message was.
	if n, err := strconv.Atoi(r.str("sip_message_length")); err == nil && n > len(e.SIPMessage) {
		length = max(length, n)
	}
	e.SIPMessageLength = length
	// Whether the capturing node proved the source (JSON true, a database's 1).
	switch r.str("source_verified") {
	case "true", "1":
		e.SourceVerified = true
	}
	// What the capturing node read from the message; Check below bounds it.
	e.Tool = strings.TrimSpace(r.str("tool"))
	switch r.str("ua_spoofed") {
	case "true", "1":
		e.UASpoofed = true
	}
	if e.Payload, err = payloadOf(r["payload"]); err != nil {
		return nil, err
	}
	if u, err := uuid.Parse(e.UUID); err == nil {
		e.UUID = u.String()
	} else {
		e.UUID = uuid.NewSHA1(importNamespace, raw).String()
	}
	if e.AppName == "" {
		e.AppName = event.AppName
	}
	if e.CollectedMethod == "" {
		e.CollectedMethod = event.Passive
	}
	if e.SourceIP, e.SourcePort, err = splitAddr(r.str("source_ip"), r.str("source_port")); err != nil {
		return nil, fmt.Errorf("source_ip: %w", err)
	}
	// The destination is optional (the reference lost it); a bad one is dropped, not fatal.
	if ip, port, err := splitAddr(r.str("destination_ip"), r.str("destination_port")); err == nil {
		e.DestinationIP, e.DestinationPort = ip, port
	}
	// Any age, but not from the future (a day's slack for a wrong --tz): a key stamped years
	// ahead would stay in every blocklist window until then.
	if err := event.Check(e, event.Rules{Now: time.Now(), MaxAge: 200 * 365 * 24 * time.Hour, MaxFuture: ImportMaxFuture}); err != nil {
		return nil, err
	}
	return e, nil
}

// ImportMaxFuture is how far ahead of the clock an imported record may be stamped.
const ImportMaxFuture = 24 * time.Hour

// clean makes a text field valid UTF-8 and bounds it like a captured one.
func clean(s string) string {
	if len(s) > 4096 {
		s = s[:4096]
	}
	return event.Sanitize([]byte(s))
}

// splitAddr reads an IP address that may carry a port ("192.0.2.1:5060", "[2001:db8::1]:5060",
// the reference's later form), with the port possibly given apart.
func splitAddr(s, port string) (string, int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", 0, errors.New("missing")
	}
	p, _ := strconv.Atoi(port)
	if p < 0 || p > 65535 {
		p = 0
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("").String(), p, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not an IP address", s)
	}
	return ap.Addr().Unmap().WithZone("").String(), int(ap.Port()), nil
}

// ParseTimestamp reads the timestamps import sources have written: "YYYY-MM-DD HH:MM:SS" with
// any number of fraction digits (the reference wrote too few at times; they are read as a
// decimal fraction), a 'T' or a space in the middle, or RFC 3339. A time without zone is in
// loc. The result is an event_timestamp (UTC, nine digits).
func ParseTimestamp(s string, loc *time.Location) (string, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return event.FormatTime(t), nil
	}
	base, frac, _ := strings.Cut(s, ".")
	base = strings.Replace(base, "T", " ", 1)
	t, err := time.ParseInLocation("2006-01-02 15:04:05", base, loc)
	if err != nil {
		return "", fmt.Errorf("event_timestamp %q is not a date and time", s)
	}
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		ns, err := strconv.Atoi(frac + strings.Repeat("0", 9-len(frac)))
		if err != nil || ns < 0 {
			return "", fmt.Errorf("event_timestamp %q has a bad fraction of a second", s)
		}
		t = t.Add(time.Duration(ns))
	}
	return event.FormatTime(t), nil
}

// payloadOf reads a record's payload findings: a JSON array in a log line, its text in a
// database column.
func payloadOf(v any) ([]event.Payload, error) {
	var b []byte
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
	}
	if len(b) == 0 {
		return nil, nil
	}
	var p []event.Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("payload is not a list of {kind, where}: %w", err)
	}
	return p, nil
}
