package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

const apiToken = "e2e-token"

// api is a client of one node's REST API.
type api struct {
	t     *testing.T
	base  string
	token string
}

func (a api) get(path string) (int, http.Header, string) {
	a.t.Helper()
	req, err := http.NewRequest("GET", a.base+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

var timestampRE = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}`)

// render is a response as its golden file holds it: status, the contract headers, and the
// body with timestamps (which differ every run) replaced by a placeholder of the same width.
func render(status int, h http.Header, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s\n", status, http.StatusText(status))
	for _, k := range []string{"Content-Type", "Access-Control-Allow-Origin", "X-Powered-By", "X-Dialtrap-Version", "Content-Length"} {
		if v := h.Get(k); v != "" {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	b.WriteString(timestampRE.ReplaceAllString(body, "YYYY-MM-DD hh:mm:ss.nnnnnnnnn"))
	return b.String()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden.Check(t, filepath.Join("testdata", "api", name+".golden"), []byte(got))
}

// dialtrap runs the binary with args and returns its exit code and output.
func dialtrap(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

// The API answers from what the capture path stored: probes from sipsak (UDP, TCP, IPv6) and
// an INVITE from SIPp on another loopback address; the responses are compared with golden
// files. Then dialtrap check asks the same node, and export and import carry the store to a
// second node whose API must answer the same.
func TestAPIOverCapturedProbes(t *testing.T) {
	need(t, "sipp", "sipsak", "script")
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--api-token", apiToken}})
	a := api{t, "http://" + n.apiAddr, apiToken}

	for _, args := range [][]string{
		{"-s", fmt.Sprintf("sip:100@127.0.0.1:%d", n.port)},
		{"--transport=tcp", "-s", fmt.Sprintf("sip:100@127.0.0.1:%d", n.port)},
	} {
		if out, err := run(t, 30*time.Second, "sipsak", args...); err != nil {
			t.Fatalf("sipsak %v: %v\n%s", args, err, out)
		}
	}
	for _, r := range []struct{ scenario, number, local, target string }{
		{"options.xml", "+4412345678", "::1", fmt.Sprintf("[::1]:%d", n.port)},
		{"invite.xml", "0046812118532", "127.0.0.2", fmt.Sprintf("127.0.0.1:%d", n.port)},
		{"options.xml", "", "127.0.0.3", fmt.Sprintf("127.0.0.1:%d", n.port)}, // SIPp's default user: "service"
	} {
		args := []string{"-sf", abs(t, "testdata/"+r.scenario), "-m", "1", "-t", "u1", "-i", r.local,
			"-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "30", "-timeout_error", r.target}
		if r.number != "" {
			args = append(args, "-s", r.number)
		}
		if out, err := run(t, 60*time.Second, "sipp", args...); err != nil {
			t.Fatalf("sipp %s: %v\n%s", r.scenario, err, tail(out, 2000))
		}
	}
	// Events reach the store through the hub: wait until all six are counted.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, body := a.get("/stats")
		if strings.Contains(body, `"events_total": 6,`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API never counted 6 events:\n%s\n%s", body, n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}

	routes := []struct{ golden, path string }{
		{"health", "/health-check"},
		{"ip-list", "/ip-addresses"},
		{"ip-found", "/ip-addresses/127.0.0.2"},
		{"ip6-found", "/ip-addresses/0:0:0:0:0:0:0:1"},
		{"ip-missing", "/ip-addresses/192.0.2.1"},
		{"ip-malformed", "/ip-addresses/127.0.0"},
		{"ipset", "/ipset"},
		{"number-list", "/numbers"},
		{"number-list-page", "/numbers?limit=1&offset=1"},
		{"number-found", "/numbers/100"},
		{"number-plus", "/numbers/+4412345678"},
		{"number-exact-miss", "/numbers/+46812118532"},
		{"number-national", "/numbers/+46812118532?match=national"},
		{"number-malformed", "/numbers/%FF"},
		{"number-name", "/numbers/46-81"},
		{"number-service", "/numbers/service"},
		{"number-list-limit-0", "/numbers?limit=0"},
		{"hosted-number", "/api/phone-numbers/0046812118532"},
		{"hosted-ip-miss", "/api/ip-addresses/192.0.2.1"},
		{"stats", "/stats"},
		{"sip-methods", "/sip-methods"},
		{"user-agents", "/user-agents"},
		{"not-found", "/numbers/100/extra"},
	}
	bodies := map[string]string{}
	for _, r := range routes {
		status, h, body := a.get(r.path)
		bodies[r.path] = body
		checkGolden(t, r.golden, render(status, h, body))
	}
	// Without the token only /health-check answers.
	anon := api{t, a.base, ""}
	if status, _, _ := anon.get("/health-check"); status != 200 {
		t.Errorf("/health-check without token: %d", status)
	}
	status, h, body := anon.get("/numbers/100")
	checkGolden(t, "unauthorized", render(status, h, body))

	// dialtrap check, against the API and against the database the node is writing.
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--api-url", a.base, "--api-token", apiToken, "100"}, 1, "known-bad: 100 (seen 2 times, last "},
		{[]string{"--api-url", a.base + "/", "--api-token", apiToken, "999"}, 0, "unknown: 999"},
		{[]string{"--api-url", a.base, "--api-token", apiToken, "--number-match", "national", "+46812118532"}, 1, "known-bad: +46812118532 (matches 0046812118532)"},
		{[]string{"--api-url", a.base, "--api-token", apiToken, "::1"}, 1, "known-bad: ::1"},
		{[]string{"--api-url", a.base, "100"}, 2, ""},                                      // no token: 401 is not an answer
		{[]string{"--api-url", a.base + "/prefix", "--api-token", apiToken, "100"}, 2, ""}, // wrong URL: a 404 that is not a lookup
		{[]string{"--api-url", fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t, "")), "100"}, 2, ""},
		{[]string{"--data-dir", n.dir, "127.0.0.2"}, 1, "known-bad: 127.0.0.2 (seen 2 times"},
		{[]string{"--data-dir", n.dir, "::ffff:127.0.0.1"}, 1, "known-bad: 127.0.0.1 (seen 2 times"},
		{[]string{"--data-dir", n.dir, "192.0.2.1"}, 0, "unknown: 192.0.2.1"},
		{[]string{"--data-dir", n.dir, "--number-match", "national", "901146812118532"}, 1, "known-bad: 901146812118532 (matches 0046812118532)"},
		{[]string{"--data-dir", n.dir, "-q", "100"}, 1, ""},
		{[]string{"--data-dir", t.TempDir(), "100"}, 2, ""}, // no database there
		{[]string{"--data-dir", n.dir, "12ab"}, 0, "unknown: 12ab"},
		{[]string{"--data-dir", n.dir, "service"}, 1, "known-bad: service (seen 1 time,"},
		{[]string{"--api-url", a.base, "--api-token", apiToken, "--number-match", "national", "service"}, 1, "known-bad: service (seen 1 time,"},
		{[]string{"--data-dir", n.dir, "\xff"}, 2, ""},
		{[]string{"--data-dir", n.dir, "--number-match", "fuzzy", "100"}, 2, ""},
		{[]string{"--data-dir", n.dir}, 2, ""},
	} {
		code, out, errOut := dialtrap(t, append([]string{"check"}, c.args...)...)
		if code != c.code || !strings.HasPrefix(out, c.out) || (c.out == "" && out != "") {
			t.Errorf("check %v: exit %d, stdout %q, stderr %q; want exit %d, stdout %q", c.args, code, out, errOut, c.code, c.out)
		}
		if code == 2 && errOut == "" {
			t.Errorf("check %v: exit 2 without a reason on stderr", c.args)
		}
	}
	n.stop()

	// Export, then import into an empty node, twice: the second adds nothing.
	export := filepath.Join(t.TempDir(), "events.jsonl")
	if code, _, errOut := dialtrap(t, "export", "--data-dir", n.dir, "-o", export); code != 0 {
		t.Fatalf("export: exit %d: %s", code, errOut)
	}
	code, csvOut, errOut := dialtrap(t, "export", "--data-dir", n.dir, "--format", "csv")
	if code != 0 || !strings.HasPrefix(csvOut, "app_name,app_version,event_timestamp,event_uuid,") {
		t.Fatalf("CSV export: exit %d %s\n%.300s", code, errOut, csvOut)
	}
	dir2 := t.TempDir()
	for i, want := range []string{"6 records, 6 events added, 0 already stored, 0 skipped", "6 records, 0 events added, 6 already stored, 0 skipped"} {
		code, out, errOut := dialtrap(t, "import", "--data-dir", dir2, export)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("import %d: exit %d, %q %q; want %q", i+1, code, out, errOut, want)
		}
	}
	n2 := startNode(t, nodeOpts{dir: dir2, args: []string{"-R", "-a"}})
	b := api{t, "http://" + n2.apiAddr, ""}
	for _, path := range []string{"/ip-addresses", "/numbers", "/stats", "/user-agents", "/numbers/+46812118532?match=national"} {
		// The imported node captures nothing (-R): it has no UDP socket whose drops to count.
		want := strings.Replace(bodies[path], "],\n  \"udp_receive_drops\": 0\n}", "]\n}", 1)
		if _, _, body := b.get(path); body != want {
			t.Errorf("%s after export and import:\n%s\nwant\n%s", path, body, want)
		}
	}
	n2.stop()

	// On a terminal, import draws a progress bar.
	dir3 := t.TempDir()
	out, err := run(t, 30*time.Second, "script", "-qec", fmt.Sprintf("%s import --data-dir %s %s", binary, dir3, export), "/dev/null")
	if err != nil || !strings.Contains(out, "events.jsonl 100% [==============================] 6 events") {
		t.Errorf("import on a terminal: %v\n%q", err, out)
	}
}

// An operator moving from the reference product imports its SQLite database (table honey,
// built here with the documented columns) and its JSON log, and the API answers from them.
func TestImportReferenceData(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "sentrypeer.db")
	db, err := sql.Open("sqlite", ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE honey (honey_id INTEGER PRIMARY KEY AUTOINCREMENT, event_timestamp TEXT, event_uuid TEXT,
			collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
			user_agent TEXT, sip_message TEXT, created_by_node_id TEXT)`,
		`INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, called_number, transport_type, method, user_agent, sip_message, created_by_node_id) VALUES
			('2023-07-27 12:06:59.388055505', '8a2e3c44-1a5b-4c6d-9e8f-0a1b2c3d4e5f', 'responsive', '193.107.216.27', '981046500729221', 'UDP', 'INVITE', 'friendly-scanner', 'INVITE sip:981046500729221@x SIP/2.0', '7d0c2f1e-0000-4000-8000-000000000001'),
			('2023-07-27 12:05:19.206442003', '8a2e3c44-1a5b-4c6d-9e8f-0a1b2c3d4e60', 'responsive', '193.46.255.152:5070', '81046500729221', 'UDP', 'INVITE', 'friendly-scanner', 'INVITE', '7d0c2f1e-0000-4000-8000-000000000001'),
			('2023-07-27 11:59:57.679798597', '8a2e3c44-1a5b-4c6d-9e8f-0a1b2c3d4e61', 'passive', 'bogus', '100', 'UDP', 'OPTIONS', 'x', 'x', 'n')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	jsonLog := filepath.Join(t.TempDir(), "sentrypeer_json.log")
	os.WriteFile(jsonLog, []byte(`{"app_name":"sentrypeer","app_version":"v4.0.0","event_timestamp":"2023-07-27 12:07:00.1","event_uuid":"8a2e3c44-1a5b-4c6d-9e8f-0a1b2c3d4e62","created_by_node_id":"7d0c2f1e-0000-4000-8000-000000000001","collected_method":"responsive","transport_type":"TCP","source_ip":"193.107.216.27","destination_ip":"","called_number":"100","sip_method":"REGISTER","sip_user_agent":"sipcli/v1.8","sip_message":"REGISTER"}
not json
`+svmapLine(t)), 0o600)
	dir := t.TempDir()
	code, out, errOut := dialtrap(t, "import", "--data-dir", dir, ref, jsonLog)
	if code != 0 || !strings.Contains(out, "3 records, 2 events added, 0 already stored, 1 skipped as invalid") ||
		!strings.Contains(out, "3 records, 2 events added, 0 already stored, 1 skipped as invalid") || !strings.Contains(errOut, "bogus") {
		t.Fatalf("import: exit %d\n%s\n%s", code, out, errOut)
	}
	n := startNode(t, nodeOpts{dir: dir, args: []string{"-R", "-a"}})
	a := api{t, "http://" + n.apiAddr, ""}
	for path, want := range map[string]int{
		"/numbers/981046500729221":                        200,
		"/numbers/+46500729221":                           404,
		"/numbers/+46500729221?match=national":            200,
		"/ip-addresses/193.107.216.27":                    200,
		"/ip-addresses/193.46.255.152":                    200,
		"/numbers/100":                                    200,
		"/api/phone-numbers/0046500729221":                404,
		"/api/phone-numbers/0046500729221?match=national": 200,
	} {
		if status, _, body := a.get(path); status != want {
			t.Errorf("%s: %d, want %d\n%s", path, status, want, body)
		}
	}
	_, _, body := a.get("/numbers/+46500729221?match=national")
	for _, m := range []string{`"981046500729221"`, `"81046500729221"`} {
		if !strings.Contains(body, m) {
			t.Errorf("national match does not list %s:\n%s", m, body)
		}
	}
	_, _, body = a.get("/ip-addresses/193.107.216.27")
	if !strings.Contains(body, `"seen_count": "2"`) || !strings.Contains(body, `"seen_last": "2023-07-27 12:07:00.100000000"`) {
		t.Errorf("imported IP aggregate:\n%s", body)
	}
	// The import labels what it stores: origins, and the tool of a message recorded without
	// one, from the message itself.
	for path, want := range map[string]string{"/stats/countries": `"country": "HK"`, "/stats/tools": `"tool": "sipvicious"`} {
		if _, _, body := a.get(path); !strings.Contains(body, want) {
			t.Errorf("%s lacks %s:\n%s", path, want, body)
		}
	}
	n.stop()
	if got := n.events(); len(got) != 4 {
		t.Errorf("%d events stored, want 4", len(got))
	}
}

// svmapLine is a reference JSON log line holding a real svmap OPTIONS and no tool.
func svmapLine(t *testing.T) string {
	t.Helper()
	msg, err := os.ReadFile("../../internal/sip/testdata/messages/svmap-options.sip")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{"app_name": "sentrypeer", "app_version": "v4.0.0",
		"event_timestamp": "2023-07-27 12:08:00.1", "event_uuid": "8a2e3c44-1a5b-4c6d-9e8f-0a1b2c3d4e63",
		"created_by_node_id": "7d0c2f1e-0000-4000-8000-000000000001", "collected_method": "responsive",
		"transport_type": "UDP", "source_ip": "193.46.255.152", "destination_ip": "", "called_number": "100",
		"sip_method": "OPTIONS", "sip_user_agent": "friendly-scanner", "sip_message": string(msg)})
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}
