package eventio

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/sink/jsonlog"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

func sample(i int) *event.Event {
	return &event.Event{
		AppName: event.AppName, AppVersion: "0.1.0", Timestamp: fmt.Sprintf("2026-11-23 10:00:%02d.000000123", i),
		UUID: fmt.Sprintf("0190f4a2-7b3c-7d4e-8f00-%012d", i), NodeID: "0190f4a2-0000-7000-8000-000000000001",
		CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: "2001:db8::7", SourcePort: 5070 + i,
		DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: "0046812345678",
		SIPMethod: "INVITE", SIPUserAgent: `friendly-scanner, "quoted"`,
		SIPMessage: "INVITE sip:0046812345678@192.0.2.1 SIP/2.0\r\nVia: x,y\r\n\r\n",
	}
}

func readAll(t *testing.T, path string, o Options) ([]*event.Event, Result) {
	t.Helper()
	var got []*event.Event
	res, err := Read(context.Background(), path, o, func(e *event.Event) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, res
}

func TestRoundTrip(t *testing.T) {
	for _, f := range []Format{JSONLines, CSV} {
		t.Run(string(f), func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, f)
			if err != nil {
				t.Fatal(err)
			}
			var want []*event.Event
			for i := range 3 {
				want = append(want, sample(i))
				want[i].SourceVerified = i == 1
				if i == 2 {
					want[i].Tool, want[i].UASpoofed = "sipvicious", true
					want[i].Payload = []event.Payload{{Kind: "sqli", Where: "to"}, {Kind: "script", Where: "user-agent"}}
				}
				if err := w.Write(want[i]); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "export."+string(f))
			os.WriteFile(path, buf.Bytes(), 0o600)
			if got, _ := Detect(path); got != f {
				t.Errorf("detected %q, want %q", got, f)
			}
			got, res := readAll(t, path, Options{})
			if res.Skipped != 0 || len(got) != len(want) {
				t.Fatalf("read %d events, skipped %d (%v)", len(got), res.Skipped, res.Errors)
			}
			for i := range want {
				if f == CSV {
					// encoding/csv reads CRLF inside a field as LF: CSV is for spreadsheets,
					// JSON lines is the lossless format.
					w := *want[i]
					w.SIPMessage = strings.ReplaceAll(w.SIPMessage, "\r\n", "\n")
					w.SourceVerified = false // not one of the 15 CSV keys
					w.Tool, w.UASpoofed, w.Payload = "", false, nil
					want[i] = &w
				}
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// A JSON log written with --event-compat ip-port (source_ip and destination_ip as
// address:port) imports as the events it was written from: the port is split off the address.
func TestImportJSONLogIPPort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dialtrap_json.log")
	l, err := jsonlog.Open(path, event.CompatIPPort)
	if err != nil {
		t.Fatal(err)
	}
	var want []*event.Event
	for i, m := range []func(*event.Event){
		func(*event.Event) {}, // IPv6 source, IPv4 destination
		func(e *event.Event) { e.SourceIP, e.DestinationIP = "192.0.2.9", "2001:db8::1" },
		func(e *event.Event) { e.SourcePort = 0 },                           // written bare
		func(e *event.Event) { e.DestinationIP, e.DestinationPort = "", 0 }, // no destination
		func(e *event.Event) { e.SourcePort, e.DestinationPort = 65535, 1 },
	} {
		e := sample(i)
		m(e)
		want = append(want, e)
	}
	if err := l.Write(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte(`"source_ip":"[2001:db8::7]:5070","destination_ip":"192.0.2.1:5060"`)) {
		t.Fatalf("the log is not in the ip-port spelling:\n%s", raw)
	}
	got, res := readAll(t, path, Options{})
	if res.Skipped != 0 || len(got) != len(want) {
		t.Fatalf("read %d events, skipped %d (%v)", len(got), res.Skipped, res.Errors)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// The address's own port wins over a source_port that disagrees; one without a port keeps
// the port given apart.
func TestImportAddressPortPrecedence(t *testing.T) {
	for _, c := range []struct {
		ip, port string
		wantIP   string
		wantPort int
	}{
		{"192.0.2.9:5061", "5060", "192.0.2.9", 5061},
		{"[2001:db8::9]:5061", "", "2001:db8::9", 5061},
		{"2001:db8::9", "5060", "2001:db8::9", 5060},
		{"[::ffff:192.0.2.9]:7", "", "192.0.2.9", 7},
	} {
		ip, port, err := splitAddr(c.ip, c.port)
		if err != nil || ip != c.wantIP || port != c.wantPort {
			t.Errorf("splitAddr(%q, %q) = %q, %d, %v; want %q, %d", c.ip, c.port, ip, port, err, c.wantIP, c.wantPort)
		}
	}
	for _, bad := range []string{"[2001:db8::9]", "192.0.2.9:port", "[192.0.2.9]:5060x"} {
		if _, _, err := splitAddr(bad, ""); err == nil {
			t.Errorf("splitAddr(%q) accepted", bad)
		}
	}
}

// A dialtrap database keeps what the contract keys do not: whether a source was proven,
// and how long a cut message was.
func TestReadDialtrapDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.db")
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	want := []*event.Event{sample(0), sample(1)}
	want[1].SourceVerified = true
	want[0].SIPMessageLength = 70000
	want[1].Tool, want[1].UASpoofed, want[1].Payload = "sipp", true, []event.Payload{{Kind: "shell", Where: "request-uri"}}
	if err := st.Write(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	st.Close()
	got, res := readAll(t, path, Options{})
	if len(got) != 2 || res.Skipped != 0 {
		t.Fatalf("read %d, skipped %d", len(got), res.Skipped)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// The reference product's database, built here with its documented schema.
func TestReadReferenceDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reference.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := []string{`CREATE TABLE honey (
		honey_id INTEGER PRIMARY KEY AUTOINCREMENT, event_timestamp TEXT, event_uuid TEXT,
		collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
		user_agent TEXT, sip_message TEXT, created_by_node_id TEXT)`}
	ins := `INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, called_number,
		transport_type, method, user_agent, sip_message, created_by_node_id) VALUES (?,?,?,?,?,?,?,?,?,?)`
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	rows := [][]any{
		{"2022-01-11 13:30:48.703603359", "4503cc92-26cb-4b3e-bb33-69a83fa09321", "responsive", "193.107.216.27", "981046500729221", "UDP", "INVITE", "friendly-scanner", "INVITE sip:981046500729221@x SIP/2.0\r\n\r\n", "7a3f1c2e-1111-4222-8333-444455556666"},
		{"2022-01-11 13:30:49.7036", "not-a-uuid", "passive", "193.46.255.152:5071", "100", "udp", "OPTIONS", "sipvicious", "OPTIONS", "7a3f1c2e-1111-4222-8333-444455556666"},
		{"2022-01-11 13:30:50", nil, nil, "[2001:db8::9]:5060", nil, "TCP", "REGISTER", nil, nil, nil},
		{"yesterday", "4503cc92-26cb-4b3e-bb33-69a83fa09322", "passive", "193.46.255.152", "1", "UDP", "INVITE", "x", "x", "n"},
		{"2022-01-11 13:30:51", "4503cc92-26cb-4b3e-bb33-69a83fa09323", "passive", "not an ip", "1", "UDP", "INVITE", "x", "x", "n"},
		{"2022-01-11 13:30:52", "4503cc92-26cb-4b3e-bb33-69a83fa09324", "passive", "193.46.255.152", "1", "SCTP", "INVITE", "x", "x", "n"},
	}
	for _, r := range rows {
		if _, err := db.Exec(ins, r...); err != nil {
			t.Fatal(err)
		}
	}
	got, res := readAll(t, path, Options{})
	if res.Records != 6 || res.Skipped != 3 || len(got) != 3 {
		t.Fatalf("records %d, skipped %d (%q), events %d; want 6, 3, 3", res.Records, res.Skipped, res.Errors, len(got))
	}
	want := []struct {
		ts, ip                                string
		port                                  int
		transport, number, method, agent, app string
	}{
		{"2022-01-11 13:30:48.703603359", "193.107.216.27", 0, "UDP", "981046500729221", "INVITE", "friendly-scanner", referenceAppName},
		{"2022-01-11 13:30:49.703600000", "193.46.255.152", 5071, "UDP", "100", "OPTIONS", "sipvicious", referenceAppName},
		{"2022-01-11 13:30:50.000000000", "2001:db8::9", 5060, "TCP", "", "REGISTER", "", referenceAppName},
	}
	for i, w := range want {
		e := got[i]
		if e.Timestamp != w.ts || e.SourceIP != w.ip || e.SourcePort != w.port || e.Transport != w.transport ||
			e.CalledNumber != w.number || e.SIPMethod != w.method || e.SIPUserAgent != w.agent || e.AppName != w.app {
			t.Errorf("row %d: %+v", i, e)
		}
	}
	// A row without a valid UUID gets the same derived one on every import.
	again, _ := readAll(t, path, Options{})
	if got[1].UUID != again[1].UUID || got[1].UUID == "not-a-uuid" {
		t.Errorf("derived UUID not stable: %s then %s", got[1].UUID, again[1].UUID)
	}
	// Local-time timestamps can be read in the zone they were written in.
	cet, err := time.LoadLocation("Europe/Stockholm")
	if err != nil {
		t.Fatal(err)
	}
	local, _ := readAll(t, path, Options{Location: cet})
	if local[0].Timestamp != "2022-01-11 12:30:48.703603359" {
		t.Errorf("Stockholm time read as %s", local[0].Timestamp)
	}
}

// The reference's JSON log, with the damage a real log file collects.
func TestReadJSONLogWithBadLines(t *testing.T) {
	good := `{"app_name":"sentrypeer","app_version":"v1.4.0","event_timestamp":"2022-02-22 11:19:15.848934346","event_uuid":"4503cc92-26cb-4b3e-bb33-69a83fa09321","created_by_node_id":"4503cc92-26cb-4b3e-bb33-69a83fa09321","collected_method":"responsive","transport_type":"UDP","source_ip":"144.21.55.36:5060","destination_ip":"","called_number":"100","sip_method":"OPTIONS","sip_user_agent":"sipsak 0.9.7","sip_message":"OPTIONS sip:100@x SIP/2.0\r\n"}`
	lines := []string{
		good,
		"",
		`{"event_timestamp": "2022-02-22 11:19:16", "source_ip": "144.21.55.37", "transport_type": "TCP"}`,
		`{"truncated by a full disk": `,
		`[1,2,3]`,
		"garbage \x00\xff",
		`{"event_timestamp": "2022-02-22 11:19:17", "source_ip": "144.21.55.38", "transport_type": "UDP", "sip_message": "` + strings.Repeat("x", MaxRecord) + `"}`,
		`{"event_timestamp": "2022-02-22 11:19:18", "source_ip": "144.21.55.39", "transport_type": "UDP", "called_number": 12345, "sip_user_agent": "bad ` + "\xff" + ` utf8"}`,
	}
	path := filepath.Join(t.TempDir(), "sentrypeer_json.log")
	os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600)
	got, res := readAll(t, path, Options{})
	if len(got) != 3 || res.Skipped != 4 {
		t.Fatalf("%d events, %d skipped (%q); want 3 and 4", len(got), res.Skipped, res.Errors)
	}
	if got[0].SourceIP != "144.21.55.36" || got[0].SourcePort != 5060 || got[0].AppVersion != "v1.4.0" {
		t.Errorf("first event %+v", got[0])
	}
	if got[2].CalledNumber != "12345" || got[2].SIPUserAgent != "bad \uFFFD utf8" {
		t.Errorf("last event %+v", got[2])
	}
	for _, e := range got {
		if err := event.Check(e, event.Rules{}); err != nil {
			t.Error(err)
		}
	}
}

func TestDetectRejectsOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.bin")
	os.WriteFile(path, []byte("\x89PNG\r\n"), 0o600)
	if _, err := Detect(path); err == nil {
		t.Error("detected a PNG as an import format")
	}
	if _, err := Read(context.Background(), path, Options{}, func(*event.Event) error { return nil }); err == nil {
		t.Error("read a PNG")
	}
	empty := filepath.Join(t.TempDir(), "empty.db")
	db, _ := sql.Open("sqlite", empty)
	db.Exec("CREATE TABLE other (x)")
	db.Close()
	if _, err := Read(context.Background(), empty, Options{}, func(*event.Event) error { return nil }); err == nil ||
		!strings.Contains(err.Error(), "honey") {
		t.Errorf("database without known tables: %v", err)
	}
}

func TestParseTimestamp(t *testing.T) {
	for in, want := range map[string]string{
		"2022-01-11 13:30:48.703603359":   "2022-01-11 13:30:48.703603359",
		"2022-01-11 13:30:48.7":           "2022-01-11 13:30:48.700000000",
		"2022-01-11 13:30:48.70360335912": "2022-01-11 13:30:48.703603359",
		"2022-01-11T13:30:48":             "2022-01-11 13:30:48.000000000",
		"2022-01-11T13:30:48.5+01:00":     "2022-01-11 12:30:48.500000000",
		" 2022-01-11 13:30:48 ":           "2022-01-11 13:30:48.000000000",
		"2022-01-11 13:30:48.-5":          "",
		"2022-01-11 13:30:48.x":           "",
		"2022-01-11":                      "",
		"":                                "",
	} {
		got, err := ParseTimestamp(in, time.UTC)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("ParseTimestamp(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// FuzzNormalizeLine: any JSON line either becomes a valid event or is refused; never a panic.
func FuzzNormalizeLine(f *testing.F) {
	f.Add([]byte(`{"event_timestamp":"2022-02-22 11:19:15.8","source_ip":"144.21.55.36:5060","transport_type":"udp"}`))
	f.Add([]byte(`{"event_timestamp":1,"source_ip":[],"transport_type":null}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		rec := Record{}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		if dec.Decode(&rec) != nil {
			return
		}
		e, err := Normalize(rec, line, time.UTC)
		if err != nil {
			return
		}
		if err := event.Check(e, event.Rules{}); err != nil {
			t.Fatalf("Normalize returned an invalid event: %v", err)
		}
		if _, err := e.MarshalLine(); err != nil {
			t.Fatal(err)
		}
	})
}

// A record stamped more than a day ahead is skipped: it would sit in every blocklist window
// until its time came.
func TestReadRefusesFutureRecords(t *testing.T) {
	ahead, near := sample(1), sample(2)
	ahead.Timestamp = event.FormatTime(time.Now().Add(48 * time.Hour))
	near.Timestamp = event.FormatTime(time.Now().Add(time.Hour))
	var lines []byte
	for _, e := range []*event.Event{ahead, near} {
		b, _ := e.MarshalLine()
		lines = append(lines, b...)
	}
	path := filepath.Join(t.TempDir(), "future.jsonl")
	os.WriteFile(path, lines, 0o600)
	got, res := readAll(t, path, Options{})
	if len(got) != 1 || got[0].UUID != near.UUID || res.Skipped != 1 {
		t.Errorf("read %d events, skipped %d; want only the one an hour ahead", len(got), res.Skipped)
	}
}
