package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

var subcommandNames = []string{"check", "export", "import", "migrate", "peers", "health", "version", "block"}

// dialtrap -h names every subcommand, and each has its own -h, on standard output, exit 0.
func TestHelpListsEverySubcommand(t *testing.T) {
	code, out, _ := dialtrap(t, "-h")
	if code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	for _, sub := range subcommandNames {
		if !strings.Contains(out, "dialtrap "+sub+" ") && !strings.Contains(out, "dialtrap "+sub+"\n") {
			t.Errorf("dialtrap -h does not list %q:\n%s", sub, out)
		}
	}
	if strings.Contains(out, "not in this version") {
		t.Errorf("dialtrap -h still calls something not built:\n%s", out)
	}
	if code, out, _ := dialtrap(t, "block", "status", "-h"); code != 0 || !strings.HasPrefix(out, "Usage: dialtrap block status") {
		t.Errorf("dialtrap block status -h: exit %d, %.80q", code, out)
	}
	for _, sub := range subcommandNames {
		for _, h := range []string{"-h", "--help"} {
			code, out, errOut := dialtrap(t, sub, h)
			if code != 0 || !strings.HasPrefix(out, "Usage: dialtrap "+sub) || errOut != "" {
				t.Errorf("dialtrap %s %s: exit %d, stdout %.80q, stderr %q", sub, h, code, out, errOut)
			}
		}
	}
}

// A usage error exits 2 with one line saying what is wrong, in every subcommand.
func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"--frobnicate"},
		{"check"},
		{"check", "--frobnicate", "100"},
		{"check", "--number-match", "fuzzy", "100"},
		{"check", "100", "200"},
		{"export", "--format", "xml"},
		{"export", "--since", "the day before"},
		{"export", "extra"},
		{"export", "--frobnicate"},
		{"import"},
		{"import", "--tz", "Mars/Olympus_Mons", "x.jsonl"},
		{"import", "--frobnicate", "x.jsonl"},
		{"migrate"},
		{"migrate", "--from", "events.txt", "--to", "new.db"},
		{"migrate", "--from", "postgres://u:pw@127.0.0.1/a", "--to", "postgresql://u@127.0.0.1:5432/a"},
		{"peers", "extra"},
		{"peers", "--timeout", "soon"},
		{"peers", "--api-url", "ftp://x"},
		{"top", "--api-url", "not a url"},
		{"top", "--rows", "0"},
		{"top", "extra"},
		{"version", "--frobnicate"},
		{"block"},
		{"export", "-g", "/nonexistent/dialtrap.toml"},
	} {
		code, out, errOut := dialtrap(t, args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "dialtrap") {
			t.Errorf("dialtrap %v: exit %d, stdout %q, stderr %q; want exit 2 and a reason", args, code, out, errOut)
		}
	}
}

// With -s and no syslog daemon, the node says to start one or to use --syslog-addr, once, and
// exits 1. The test hides any /dev/log the machine has in a private mount namespace.
func TestSyslogWithoutDaemon(t *testing.T) {
	need(t, "unshare")
	script := `for s in /dev/log /run/systemd/journal/dev-log /var/run/syslog; do [ -e "$s" ] && mount --bind /dev/null "$s"; done; exec "$@"`
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "sh", "-c", script, "sh", binary, "-s",
		"--data-dir", t.TempDir(), "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d (%v), want 1:\n%s", code, err, out)
	}
	for _, want := range []string{"no syslog daemon", "start one", "--syslog-addr"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the message lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(string(out), "no syslog daemon"); n != 1 {
		t.Errorf("printed %d times, want once:\n%s", n, out)
	}
}

// At the default log level the node prints one line, the start-up summary (version, every
// address, data directory, peer ID), however many probes it takes, and nothing at shutdown.
func TestDefaultLevelPrintsOnlyTheSummary(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(t.TempDir(), "ready.json")
	cmd := exec.Command(binary, "--data-dir", dir, "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0", "-a",
		"--api-addr", "127.0.0.1:0", "-j", "-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--ready-file", ready)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	a, err := waitReady(ready, exited, 15*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for i := range 50 {
		sendUDP(t, "127.0.0.9", fmt.Sprintf("OPTIONS sip:%d@127.0.0.1 SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n", i), portOf(a.SIPUDP))
	}
	api := api{t, "http://" + a.API, ""}
	testutil.Eventually(t, "the probes are stored", 10*time.Second, func() bool {
		_, _, body := api.get("/stats")
		return strings.Contains(body, `"events_total": 50,`)
	})
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines at the default level, want the summary alone:\n%s", len(lines), stderr.String())
	}
	for _, want := range []string{"level=NOTICE", `msg="dialtrap running"`, "version=", "data_dir=" + dir,
		"sip_udp=" + a.SIPUDP, "sip_tcp=" + a.SIPTCP, "sip_tls=" + a.SIPTLS, "api=" + a.API, "peer_id=" + a.PeerID} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the summary lacks %q:\n%s", want, lines[0])
		}
	}
}

// dialtrap peers and check --api-url find the node's token wherever the node's own options
// can be: the flag, DIALTRAP_API_TOKEN, the reference's variable, the TOML file of -g or
// DIALTRAP_CONFIG. The file's api-addr also gives the default --api-url.
func TestSubcommandsReadEveryTokenSource(t *testing.T) {
	const token = "s3cret-token"
	n := startNode(t, nodeOpts{args: []string{"-a", "--api-token", token, "-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0"}})
	url := "http://" + n.apiAddr
	conf := filepath.Join(t.TempDir(), "dialtrap.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "api-token = %q\napi-addr = %q\n", token, n.apiAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		env  []string
	}{
		{"flag", []string{"--api-url", url, "--api-token", token}, nil},
		{"env", []string{"--api-url", url}, []string{"DIALTRAP_API_TOKEN=" + token}},
		{"reference env", []string{"--api-url", url}, []string{"SENTRYPEER_API_TOKEN=" + token}},
		{"file -g", []string{"-g", conf}, nil},
		{"file env", nil, []string{"DIALTRAP_CONFIG=" + conf}},
	} {
		for _, sub := range [][]string{{"peers"}, {"check", "--api-url", url, "100"}} {
			args := append(append([]string{}, sub...), c.args...)
			cmd := exec.Command(binary, args...)
			cmd.Env = append(cleanEnv(), c.env...)
			out, err := cmd.CombinedOutput()
			code := cmd.ProcessState.ExitCode()
			want := 0 // peers: the report; check: 100 is unknown here
			if code != want {
				t.Errorf("%s: dialtrap %v: exit %d (%v), want %d:\n%s", c.name, args, code, err, want, out)
			}
		}
	}
	// Without the token: refused, and the message says where to give it.
	cmd := exec.Command(binary, "peers", "--api-url", url)
	cmd.Env = cleanEnv()
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "--api-token") {
		t.Errorf("peers without a token: exit %d:\n%s", code, out)
	}
}

// cleanEnv is this process's environment without dialtrap's or the reference's variables.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "DIALTRAP_") || strings.HasPrefix(kv, "SENTRYPEER_")
	})
}

// make run keeps every file the node writes in its run directory (data/ by default, which
// git ignores) and none in the checkout. The test runs make run with its directory moved to
// a temporary one and every listener on loopback port 0; the default directory is checked
// against .gitignore.
func TestMakeRunKeepsItsFilesInTheDataDirectory(t *testing.T) {
	need(t, "make", "git")
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-s", "-C", repo, "-n", "run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cd 'data'") {
		t.Fatalf("make -n run does not run the node in data/ (%v):\n%s", err, out)
	}
	for _, f := range []string{"data/dialtrap.db", "data/node_key", "data/dialtrap_json.log", "data/sip-tls-key.pem"} {
		if err := exec.Command("git", "-C", repo, "check-ignore", "-q", f).Run(); err != nil {
			t.Errorf("git does not ignore %s: %v", f, err)
		}
	}
	before, _ := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=all").Output()

	runDir := filepath.Join(t.TempDir(), "data")
	ready := filepath.Join(t.TempDir(), "ready.json")
	args := strings.Join([]string{"--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0", "-j", "-a", "--api-addr", "127.0.0.1:0",
		"-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--ready-file", ready}, " ")
	cmd := exec.Command("make", "-s", "-C", repo, "run", "RUN_DIR="+runDir, "RUN_ARGS="+args)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // SIGTERM reaches make and the node
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}()
	a, err := waitReady(ready, exited, 3*time.Minute) // make builds the binary first
	if err != nil {
		t.Fatalf("make run: %v\n%s", err, log.String())
	}
	sendUDP(t, "127.0.0.9", "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n\r\n", portOf(a.SIPUDP))
	api := api{t, "http://" + a.API, ""}
	testutil.Eventually(t, "the probe is stored", 10*time.Second, func() bool {
		status, _, _ := api.get("/ip-addresses/127.0.0.9")
		return status == 200
	})
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	<-exited
	var files []string
	filepath.Walk(filepath.Dir(runDir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	for _, f := range files {
		if !strings.HasPrefix(f, runDir+string(filepath.Separator)) {
			t.Errorf("make run wrote %s outside its run directory", f)
		}
	}
	for _, want := range []string{"node_id", "node_key", "dialtrap.db", "dialtrap_json.log", "sip-tls-cert.pem", "sip-tls-key.pem"} {
		if !slices.Contains(files, filepath.Join(runDir, want)) {
			t.Errorf("no %s in the run directory: %v", want, files)
		}
	}
	after, _ := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=all").Output()
	if string(after) != string(before) {
		t.Errorf("make run changed the checkout:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// An operator moving from the reference product may still have SENTRYPEER_DB_FILE set: import
// must not take the file it reads as the database it writes (it would add its tables to the
// reference database, read them back empty and report success).
func TestImportRefusesItsOwnTarget(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "sentrypeer.db")
	orig := []byte(`{"app_name":"sentrypeer","event_timestamp":"2024-01-02 03:04:05.000000006","source_ip":"192.0.2.9","transport_type":"UDP"}` + "\n")
	if err := os.WriteFile(ref, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "import", ref)
	cmd.Env = append(cleanEnv(), "SENTRYPEER_DB_FILE="+ref)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), "is the database being written") {
		t.Errorf("exit %d, stderr %q; want 2 naming the clash", code, stderr.String())
	}
	if b, _ := os.ReadFile(ref); string(b) != string(orig) {
		t.Errorf("the source was changed:\n%q", b)
	}
}

// A read-only data directory is named as such, by the node and by import (SQLite alone would
// ask whether the file is an SQLite database). Tests run as root, which writes anywhere: the
// directory is made read-only by a read-only bind mount in a private mount namespace.
func TestReadOnlyDataDirectory(t *testing.T) {
	need(t, "unshare")
	dir := t.TempDir()
	jsonl := filepath.Join(t.TempDir(), "x.jsonl")
	os.WriteFile(jsonl, nil, 0o644)
	for _, args := range [][]string{
		{"--data-dir", dir, "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0"},
		{"import", "--data-dir", dir, jsonl},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		script := `mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"`
		cmd := exec.CommandContext(ctx, "unshare", append([]string{"-m", "sh", "-c", script, "sh", dir, binary}, args...)...)
		out, _ := cmd.CombinedOutput()
		cancel()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "data directory "+dir+" is not writable") {
			t.Errorf("dialtrap %v on a read-only directory: exit %d:\n%s", args, code, out)
		}
	}
}

// The agent's flags as an operator meets them: bad values exit 2 with the flag named; a dry
// run needs no privileges, prints instead of changing, and keeps no state file.
func TestBlockCommandLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"block", "--node", "http://127.0.0.1:1", "--ttl", "9000h"}, "--ttl"},
		{[]string{"block", "--node", "http://127.0.0.1:1", "--max-elements", "0"}, "--max-elements"},
		{[]string{"block", "--node", "http://127.0.0.1:1", "--ipset", "--ttl", "720h"}, "ipset"},
		{[]string{"block", "--node", "ftp://x"}, "http(s)://"},
		{[]string{"block", "--node", "http://a", "--node", "http://b", "--node-token-file", "/x"}, "one per node"},
	} {
		code, _, errOut := dialtrap(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %q; want 2 naming %q", c.args, code, errOut, c.want)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(binary, "block", "--dry-run", "--node", "http://127.0.0.1:1", "--data-dir", dir)
	out := &testutil.SyncBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first line comes after the signal handler is set: SIGTERM is then a clean stop.
	testutil.Eventually(t, "the dry run prints what it would ensure", 10*time.Second, func() bool { return strings.Contains(out.String(), "ensure") })
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("dry run after SIGTERM: %v", err)
	}
	if !strings.Contains(out.String(), "ensure") {
		t.Errorf("dry run printed %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "block-state.json")); err == nil {
		t.Error("the dry run wrote a state file: a real run would resume from its cursors")
	}
}
