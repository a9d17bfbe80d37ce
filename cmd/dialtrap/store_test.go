package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

// import, check and export work on a PostgreSQL database, named with -f or --store (as the
// node's): importing twice adds nothing, check finds what was imported, export writes it.
func TestStoreCommandsOnPostgreSQL(t *testing.T) {
	srv := pgtest.Get(t)
	url := srv.Database(t)
	dir := t.TempDir()
	var lines bytes.Buffer
	var ids []string
	for i, ip := range []string{"198.51.100.1", "198.51.100.2"} {
		e := &event.Event{AppName: event.AppName, AppVersion: "test", Timestamp: event.FormatTime(time.Now().Add(-time.Duration(i) * time.Minute)),
			UUID: uuid.Must(uuid.NewV7()).String(), NodeID: "0190f4a2-0000-7000-8000-000000000001",
			CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: ip, SourcePort: 5070,
			DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: "0046812118532", SIPMethod: "INVITE",
			SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:100@192.0.2.1 SIP/2.0\r\n\r\n"}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		lines.Write(append(b, '\n'))
		ids = append(ids, e.UUID)
	}
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, lines.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(fn func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := fn(args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	imp := func(args []string, o, e *bytes.Buffer) int { return runImport(args, o, e) }
	chk := func(args []string, o, e *bytes.Buffer) int { return runCheck(args, o, e) }
	exp := func(args []string, o, e *bytes.Buffer) int { return runExport(args, o, e) }
	for _, c := range []struct {
		name string
		fn   func([]string, *bytes.Buffer, *bytes.Buffer) int
		args []string
		code int
		want string
	}{
		{"import", imp, []string{"-f", url, in}, exitOK, "2 events added, 0 already stored"},
		{"import again", imp, []string{"--store", url, in}, exitOK, "0 events added, 2 already stored"},
		{"check known", chk, []string{"--store", url, "198.51.100.2"}, checkKnown, "known-bad: 198.51.100.2 (seen 1 time,"},
		{"check national", chk, []string{"-f", url, "--number-match", "national", "+46812118532"}, checkKnown, "matches 0046812118532"},
		{"check unknown", chk, []string{"-f", url, "198.51.100.3"}, checkUnknown, "unknown: 198.51.100.3"},
		{"export", exp, []string{"-f", url}, exitOK, ids[0]},
		{"bad store", chk, []string{"--store", "mysql://x", "198.51.100.3"}, checkError, "use sqlite or a postgres:// URL"},
		{"bad store with a password", chk, []string{"--store", "mysql://u:s3cretPW@db/x", "198.51.100.3"}, checkError, "mysql://u:xxxxx@db/x"},
		{"bad -f URL", chk, []string{"-f", "mysql://u:s3cretPW@db/x", "198.51.100.3"}, checkError, "give an SQLite file or a postgres:// URL"},
		{"no such database", chk, []string{"-f", srv.URL("nosuchdb"), "198.51.100.3"}, checkError, "create the database (createdb -O postgres nosuchdb)"},
		{"unreachable", chk, []string{"-f", "postgres://u:s3cretPW@127.0.0.1:1/x", "198.51.100.3"}, checkError, "connect to PostgreSQL at 127.0.0.1:1/x"},
	} {
		code, out := run(c.fn, c.args...)
		if code != c.code || !strings.Contains(out, c.want) || strings.Contains(out, "s3cretPW") {
			t.Errorf("%s: exit %d, want %d with %q:\n%s", c.name, code, c.code, c.want, out)
		}
	}
	if _, out := run(exp, "-f", url); !strings.Contains(out, ids[1]) {
		t.Errorf("export lacks %s:\n%s", ids[1], out)
	}
}

func TestSeenText(t *testing.T) {
	for count, want := range map[string]string{"1": "seen 1 time, last x UTC", "2": "seen 2 times, last x UTC"} {
		if got := seenText(count, "x"); got != want {
			t.Errorf("seenText(%s) = %q, want %q", count, got, want)
		}
	}
}
