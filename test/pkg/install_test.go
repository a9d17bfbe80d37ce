// Package pkg tests the packages `make dist` builds. The .deb is installed on this machine with
// dpkg, its node is run the way its systemd unit runs it, probed with sipsak, and the package
// is removed and purged, which must leave the node's data and logs in place. The .rpm is
// inspected with rpm: the same files and the equivalent scriptlets.
//
// It needs root (dpkg) and the tools scripts/test-deps.sh installs. It changes the system: it
// refuses to run where dialtrap is installed, or its data directories exist, other than as
// this test's own leftovers, and it removes all it made when it ends.
package pkg

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

const (
	root       = "../.."
	stateDir   = "/var/lib/dialtrap"
	blockState = "/var/lib/dialtrap-block"
	logsDir    = "/var/log/dialtrap"
	// marker, in the state directory, says the directory is this test's: a later run may
	// remove it (after a run that was killed before it cleaned up).
	marker = ".dialtrap-install-test"
	// serviceUID stands in for the user systemd's DynamicUser makes (nobody, nogroup).
	serviceUID = 65534
)

// unitsDir is where the packages put the units (merged /usr: /lib is /usr/lib on Debian).
const unitsDir = "/usr/lib/systemd/system"

// packaged lists every file the packages install, with its mode.
var packaged = map[string]fs.FileMode{
	"/usr/bin/dialtrap":                                                0o755,
	unitsDir + "/dialtrap.service":                                     0o644,
	unitsDir + "/dialtrap-block.service":                               0o644,
	"/etc/dialtrap/dialtrap.toml":                                      0o644,
	"/etc/dialtrap/dialtrap.env":                                       0o600,
	"/etc/dialtrap/block.env":                                          0o600,
	"/etc/logrotate.d/dialtrap":                                        0o644,
	"/usr/lib/sysctl.d/10-dialtrap.conf":                               0o644,
	"/usr/share/man/man1/dialtrap.1.gz":                                0o644,
	"/usr/share/bash-completion/completions/dialtrap":                  0o644,
	"/usr/share/zsh/vendor-completions/_dialtrap":                      0o644,
	"/usr/share/fish/vendor_completions.d/dialtrap.fish":               0o644,
	"/usr/share/doc/dialtrap/README.md":                                0o644,
	"/usr/share/doc/dialtrap/examples/low-ports.conf":                  0o644,
	"/usr/share/doc/dialtrap/examples/fail2ban/filter.d/dialtrap.conf": 0o644,
	"/usr/share/doc/dialtrap/examples/fail2ban/jail.d/dialtrap.conf":   0o644,
}

// addDocs adds the documentation the packages carry, docs/ as it is in the checkout, to
// packaged: the README and the manual page point at it.
func addDocs(t *testing.T) {
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		packaged["/usr/share/doc/dialtrap/"+rel] = 0o644
		return err
	})
	if err != nil || packaged["/usr/share/doc/dialtrap/docs/guides/quick-start.md"] == 0 {
		t.Fatalf("docs/ to package: %v", err)
	}
}

var conffiles = []string{"/etc/dialtrap/block.env", "/etc/dialtrap/dialtrap.env", "/etc/dialtrap/dialtrap.toml", "/etc/logrotate.d/dialtrap"}

// The most exposure systemd-analyze security may give each unit (it said 1.1 and 1.5 when
// the units were written): a change that weakens the sandbox fails here.
var maxExposure = map[string]float64{"dialtrap.service": 1.5, "dialtrap-block.service": 2.0}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/test-deps.sh (make test does)", tool)
		}
	}
}

// sh runs a command and returns its combined output; it fails the test on an error.
func sh(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := run(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// dpkgStatus is dialtrap's status in dpkg's database ("" when dpkg does not know it).
func dpkgStatus(t *testing.T) string {
	out, err := run(30*time.Second, "dpkg-query", "-W", "-f=${Status}", "dialtrap")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// prepare makes sure the machine holds no dialtrap but this test's leftovers, and removes those.
func prepare(t *testing.T) {
	t.Helper()
	ours := exists(filepath.Join(stateDir, marker))
	if st := dpkgStatus(t); st != "" && !strings.HasSuffix(st, "not-installed") {
		if !ours {
			t.Fatalf("dialtrap is installed on this machine (dpkg: %s) and not by this test: it would be replaced; remove it first (dpkg -P dialtrap)", st)
		}
		t.Logf("removing the package a killed run left: %s", sh(t, time.Minute, "dpkg", "-P", "dialtrap"))
	}
	for _, d := range []string{stateDir, blockState, logsDir} {
		if exists(d) && !ours {
			t.Fatalf("%s exists and is not this test's: the test would mix its data in; move it away first", d)
		}
	}
	cleanData(t)
}

func cleanData(t *testing.T) {
	for _, d := range []string{stateDir, blockState, logsDir} {
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("remove %s: %v", d, err)
		}
	}
}

// buildPackages runs make dist and returns the .deb and the .rpm.
func buildPackages(t *testing.T) (deb, rpm string) {
	t.Helper()
	start := time.Now()
	out := sh(t, 15*time.Minute, "make", "-C", root, "--no-print-directory", "dist")
	t.Logf("make dist (%s):\n%s", time.Since(start).Round(time.Second), sizeLines(out))
	debs, _ := filepath.Glob(filepath.Join(root, "dist", "dialtrap_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(root, "dist", "dialtrap-*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("make dist made %d .deb and %d .rpm, want one of each:\n%s", len(debs), len(rpms), out)
	}
	return debs[0], rpms[0]
}

// sizeLines keeps the lines of make dist that report sizes.
func sizeLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " bytes ") || strings.HasPrefix(l, "nfpm:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestPackageInstall builds the packages and runs the .deb through install, a probe, log
// rotation, removal and purge.
func TestPackageInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the package test installs a .deb: run it as root (make test does on CI)")
	}
	need(t, "make", "dpkg", "dpkg-query", "dpkg-deb", "rpm", "sipsak", "systemd-analyze", "logrotate", "man")
	addDocs(t)
	prepare(t)
	t.Cleanup(func() {
		if st := dpkgStatus(t); st != "" && !strings.HasSuffix(st, "not-installed") {
			out, err := run(time.Minute, "dpkg", "-P", "dialtrap")
			if err != nil {
				t.Errorf("cleanup: dpkg -P dialtrap: %v\n%s", err, out)
			}
		}
		cleanData(t)
		t.Logf("cleanup: removed the package and this test's %s, %s and %s", stateDir, blockState, logsDir)
	})

	deb, rpm := buildPackages(t)
	t.Run("rpm", func(t *testing.T) { inspectRPM(t, rpm, deb) })

	out := sh(t, 2*time.Minute, "dpkg", "-i", deb)
	t.Logf("dpkg -i %s:\n%s", filepath.Base(deb), out)
	// The marker goes in at once: from here on, a killed run's leftovers are recognised.
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, marker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	checkInstalled(t)
	checkUnits(t)

	node := startUnit(t, "dialtrap.service", map[string]string{
		"/etc/dialtrap/dialtrap.env": "DIALTRAP_SIP_ADDR=127.0.0.1:0\nDIALTRAP_SIP_TLS_ADDR=127.0.0.1:0\n" +
			"DIALTRAP_API_ADDR=127.0.0.1:0\nDIALTRAP_READY_FILE=" + stateDir + "/ready.json\n" +
			"DIALTRAP_SIP_RESPONSIVE=true\nDIALTRAP_VERBOSE=true\n",
	})
	ready := node.waitReady(t, filepath.Join(stateDir, "ready.json"))
	t.Logf("node up as uid %d: SIP %s, API %s", serviceUID, ready.SIPUDP, ready.API)
	// The package raised net.core.rmem_max, so the node, without capabilities, gets the
	// UDP buffer it asks for and does not warn of a smaller one.
	rmem, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(rmem))); err != nil || perr != nil || n < 33554432 {
		t.Errorf("net.core.rmem_max after install: %q (%v), want at least 33554432 from /usr/lib/sysctl.d/10-dialtrap.conf", rmem, err)
	}
	if out := node.out.String(); strings.Contains(out, "receive buffer is smaller") {
		t.Errorf("the packaged node warns of its UDP buffer:\n%s", out)
	}
	probe(t, ready.SIPUDP, "100")
	jsonLog := filepath.Join(logsDir, "dialtrap_json.log")
	ev := waitEvent(t, jsonLog, "100")
	t.Logf("event in %s: %s %s from %s, called %s, tool %q", jsonLog, ev.Transport, ev.Method, ev.SourceIP, ev.Called, ev.Tool)
	checkOwnership(t)

	// The store as an operator asks it: dialtrap check with the node's config file.
	chk := exec.Command("/usr/bin/dialtrap", "check", "-g", "/etc/dialtrap/dialtrap.toml", "127.0.0.1")
	chk.Env = []string{"PATH=/usr/bin:/bin"}
	chk.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
	cout, err := chk.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("dialtrap check -g /etc/dialtrap/dialtrap.toml 127.0.0.1: %v, want exit status 1 (known-bad):\n%s", err, cout)
	}
	t.Logf("dialtrap check -g /etc/dialtrap/dialtrap.toml 127.0.0.1 (exit 1, known-bad): %s", strings.TrimSpace(string(cout)))

	rotate(t, node, ready, jsonLog)
	blockAgent(t, ready.API)

	node.stop(t)
	t.Logf("node stopped (SIGTERM): exit status 0")

	removeAndPurge(t)
}

// inspectRPM checks the .rpm holds the .deb's files, its config files, and scriptlets that
// never delete the data.
func inspectRPM(t *testing.T, rpm, deb string) {
	info := sh(t, time.Minute, "rpm", "-qpi", rpm)
	t.Logf("rpm -qpi:\n%s", firstLines(info, 4))
	list := strings.Fields(sh(t, time.Minute, "rpm", "-qlp", rpm))
	var files []string
	for _, f := range list {
		if _, ok := packaged[f]; ok {
			files = append(files, f)
		}
	}
	for f := range packaged {
		if !slices.Contains(list, f) {
			t.Errorf("the rpm lacks %s", f)
		}
	}
	// The .deb must hold the same files: dpkg-deb -c lists ./path.
	for _, l := range strings.Split(sh(t, time.Minute, "dpkg-deb", "-c", deb), "\n") {
		fields := strings.Fields(l)
		if len(fields) < 6 || strings.HasPrefix(fields[0], "d") {
			continue
		}
		p := strings.TrimPrefix(fields[len(fields)-1], ".")
		if _, ok := packaged[p]; !ok {
			t.Errorf("the deb holds %s, which the test does not know of (add it to packaged)", p)
		}
	}
	cfg := strings.Fields(sh(t, time.Minute, "rpm", "-qp", "--configfiles", rpm))
	slices.Sort(cfg)
	if !slices.Equal(cfg, conffiles) {
		t.Errorf("rpm config files %v, want %v", cfg, conffiles)
	}
	scripts := sh(t, time.Minute, "rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "preset dialtrap.service", "stop dialtrap-block.service dialtrap.service", "try-restart"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scriptlets lack %q:\n%s", want, scripts)
		}
	}
	if regexp.MustCompile(`\brm\s`).MatchString(scripts) {
		t.Errorf("an rpm scriptlet removes files; none may (the data stays):\n%s", scripts)
	}
	t.Logf("rpm: %d files as in the deb, config files %v, scriptlets %%post (preset, try-restart), %%preun (stop, disable), %%postun (daemon-reload, data kept)", len(files), cfg)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// checkInstalled: every file with its mode, the conffiles, and the enablement postinst made.
func checkInstalled(t *testing.T) {
	for p, mode := range packaged {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
	out := sh(t, time.Minute, "dpkg-query", "-W", "-f=${Conffiles}", "dialtrap")
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			got = append(got, f[0])
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, conffiles) {
		t.Errorf("conffiles %v, want %v", got, conffiles)
	}
	v := sh(t, time.Minute, "/usr/bin/dialtrap", "-V")
	t.Logf("installed: %d files, conffiles %v; %s", len(packaged), got, strings.TrimSpace(v))
	// postinst enables the node (deb-systemd-helper, which works without a running systemd)
	// and never the firewall agent.
	wants := "/etc/systemd/system/multi-user.target.wants/"
	if !exists(wants + "dialtrap.service") {
		t.Errorf("postinst did not enable dialtrap.service (no %sdialtrap.service)", wants)
	}
	if exists(wants + "dialtrap-block.service") {
		t.Errorf("postinst enabled dialtrap-block.service: the firewall agent must wait for the operator")
	}
}

// checkUnits runs systemd-analyze verify and security on the installed units.
func checkUnits(t *testing.T) {
	units := []string{unitsDir + "/dialtrap.service", unitsDir + "/dialtrap-block.service"}
	if out := sh(t, time.Minute, "systemd-analyze", append([]string{"verify"}, units...)...); strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify warns:\n%s", out)
	}
	re := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
	for _, u := range units {
		out := sh(t, time.Minute, "systemd-analyze", "security", "--offline=yes", u)
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: no overall exposure level in:\n%s", u, out)
		}
		score, _ := strconv.ParseFloat(m[2], 64)
		t.Logf("systemd-analyze security --offline=yes: %s exposure %s %s", m[1], m[2], m[3])
		if limit := maxExposure[m[1]]; score > limit {
			t.Errorf("%s: exposure %.1f, more than %.1f: a sandboxing setting was weakened\n%s", m[1], score, limit, out)
		}
	}
}

// unit is a service run the way systemd would run it.
type unit struct {
	name   string
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	exited chan error
}

// startUnit reads the installed unit and runs its ExecStart as its systemd settings say:
// the state and logs directories made for the service's user, the environment files read,
// the working directory, the user (a stand-in for DynamicUser). systemd is not PID 1 on the
// test machines, so the unit is not started with systemctl. envFiles are written first (as
// an operator edits the conffiles): appended, so that they override what the file sets.
func startUnit(t *testing.T, name string, envFiles map[string]string) *unit {
	t.Helper()
	for p, content := range envFiles {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("\n# added by the package test\n" + content)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	svc := readUnit(t, unitsDir+"/"+name)
	if svc.one(t, "DynamicUser") != "yes" {
		t.Fatalf("%s: DynamicUser is not yes", name)
	}
	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, spec := range [][3]string{{"StateDirectory", "/var/lib", "STATE_DIRECTORY"}, {"LogsDirectory", "/var/log", "LOGS_DIRECTORY"}} {
		dirs := svc[spec[0]]
		if len(dirs) == 0 {
			continue
		}
		mode := fs.FileMode(0o755)
		if m := svc[spec[0]+"Mode"]; len(m) > 0 {
			v, err := strconv.ParseUint(m[0], 8, 32)
			if err != nil {
				t.Fatalf("%s: %sMode=%s: %v", name, spec[0], m[0], err)
			}
			mode = fs.FileMode(v)
		}
		var paths []string
		for _, d := range strings.Fields(dirs[0]) {
			p := filepath.Join(spec[1], d)
			if err := os.MkdirAll(p, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, serviceUID, serviceUID); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		env[spec[2]] = strings.Join(paths, ":")
	}
	for _, f := range svc["EnvironmentFile"] {
		optional := strings.HasPrefix(f, "-")
		f = strings.TrimPrefix(f, "-")
		vars, err := readEnvFile(f)
		if err != nil {
			if optional && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			t.Fatalf("%s: EnvironmentFile %s: %v", name, f, err)
		}
		for k, v := range vars {
			env[k] = v
		}
	}
	argv := expandExec(t, svc.one(t, "ExecStart"), env)
	cmd := exec.Command(argv[0], argv[1:]...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Dir = specifiers(svc.one(t, "WorkingDirectory"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
	u := &unit{name: name, cmd: cmd, out: &testutil.SyncBuffer{}, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = u.out, u.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start %v: %v", name, argv, err)
	}
	t.Logf("%s: ExecStart as uid %d in %s: %s", name, serviceUID, cmd.Dir, strings.Join(argv, " "))
	go func() { u.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-u.exited
		}
	})
	return u
}

// service is a unit's [Service] section: every value of each key.
type service map[string][]string

func (s service) one(t *testing.T, key string) string {
	t.Helper()
	if len(s[key]) != 1 {
		t.Fatalf("the unit has %d %s=, want one", len(s[key]), key)
	}
	return s[key][0]
}

func readUnit(t *testing.T, path string) service {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := service{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[':
			section = l
		case section == "[Service]":
			k, v, ok := strings.Cut(l, "=")
			if !ok || strings.HasSuffix(l, `\`) {
				t.Fatalf("%s: %q: the test reads only one-line key=value settings", path, l)
			}
			s[k] = append(s[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// readEnvFile reads KEY=VALUE lines as systemd's EnvironmentFile= does (comments with # or ;).
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("line %q is not KEY=VALUE", l)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars, nil
}

// specifiers expands the unit specifiers the units use: %S and %L (system units).
func specifiers(s string) string {
	return strings.NewReplacer("%S", "/var/lib", "%L", "/var/log", "%%", "%").Replace(s)
}

// expandExec splits an ExecStart= line into words as systemd does for the forms the units
// use: $VAR alone is split into words, ${VAR} is one word, an unset one is nothing.
func expandExec(t *testing.T, line string, env map[string]string) []string {
	t.Helper()
	if strings.ContainsAny(line, `"'\`) {
		t.Fatalf("ExecStart=%s: the test does not read quoting", line)
	}
	var argv []string
	for _, w := range strings.Fields(specifiers(line)) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			if v := env[w[2:len(w)-1]]; v != "" {
				argv = append(argv, v)
			}
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(env[w[1:]])...)
		default:
			argv = append(argv, w)
		}
	}
	return argv
}

type readyAddrs struct {
	SIPUDP string `json:"sip_udp"`
	API    string `json:"api"`
}

func (u *unit) waitReady(t *testing.T, path string) readyAddrs {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			var a readyAddrs
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatalf("ready file %s: %v", path, err)
			}
			return a
		}
		select {
		case err := <-u.exited:
			t.Fatalf("%s exited at start (%v):\n%s", u.name, err, u.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s not ready after 30s:\n%s", u.name, u.out)
	return readyAddrs{}
}

func (u *unit) stop(t *testing.T) {
	t.Helper()
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-u.exited:
		if err != nil {
			t.Fatalf("%s: exit on SIGTERM: %v\n%s", u.name, err, u.out)
		}
	case <-time.After(90 * time.Second): // the unit's TimeoutStopSec
		t.Fatalf("%s did not stop within 90s of SIGTERM:\n%s", u.name, u.out)
	}
}

// probe sends one OPTIONS with sipsak to the node's SIP UDP address.
func probe(t *testing.T, addr, user string) {
	t.Helper()
	out := sh(t, 30*time.Second, "sipsak", "-s", "sip:"+user+"@"+addr)
	reply := "(no reply line)"
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "SIP/2.0 ") {
			reply = strings.TrimSpace(l)
			break
		}
	}
	t.Logf("sipsak -s sip:%s@%s: %s", user, addr, reply)
}

type logEvent struct {
	SourceIP  string `json:"source_ip"`
	Method    string `json:"sip_method"`
	Called    string `json:"called_number"`
	Transport string `json:"transport_type"`
	Tool      string `json:"tool"`
}

// waitEvent waits for the JSON log to hold the probe to number.
func waitEvent(t *testing.T, path, number string) logEvent {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			var e logEvent
			if json.Unmarshal([]byte(l), &e) == nil && e.Called == number {
				if e.SourceIP != "127.0.0.1" || e.Method != "OPTIONS" {
					t.Errorf("event %+v: want OPTIONS from 127.0.0.1", e)
				}
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event for %s in %s after 15s; it holds:\n%s", number, path, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkOwnership: the node wrote its files as the service's user, in the unit's directories.
func checkOwnership(t *testing.T) {
	for _, p := range []string{filepath.Join(stateDir, "dialtrap.db"), filepath.Join(logsDir, "dialtrap_json.log")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("the node's file: %v", err)
			continue
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != serviceUID {
			t.Errorf("%s is owned by uid %d, want the service's %d", p, uid, serviceUID)
		}
	}
}

// rotate runs the packaged logrotate config (forced, its own state file) and then does what
// its postrotate does under systemd, a SIGHUP: the node must write the next event to a new
// file and the first must be in the rotated one.
func rotate(t *testing.T, node *unit, ready readyAddrs, jsonLog string) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "logrotate.state")
	out := sh(t, time.Minute, "logrotate", "-v", "-f", "-s", state, "/etc/logrotate.d/dialtrap")
	if !exists(jsonLog + ".1") {
		t.Fatalf("logrotate did not rotate %s:\n%s", jsonLog, out)
	}
	if err := node.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	probe(t, ready.SIPUDP, "200")
	waitEvent(t, jsonLog, "200")
	old, _ := os.ReadFile(jsonLog + ".1")
	if !strings.Contains(string(old), `"called_number":"100"`) || strings.Contains(string(old), `"called_number":"200"`) {
		t.Errorf("%s.1 should hold the first probe only:\n%s", jsonLog, old)
	}
	t.Logf("logrotate -f /etc/logrotate.d/dialtrap, then SIGHUP: first event in %s.1, the next in a new %s", filepath.Base(jsonLog), filepath.Base(jsonLog))
}

// blockAgent runs dialtrap-block.service's ExecStart against the node, with --dry-run through
// block.env's BLOCK_ARGS (no CAP_NET_ADMIN here), until it is in step with the node.
func blockAgent(t *testing.T, api string) {
	t.Helper()
	if resp, err := http.Get("http://" + api + "/health-check"); err != nil {
		t.Fatalf("node API: %v", err)
	} else {
		resp.Body.Close()
	}
	// Every variable block.env names, set or commented out, is a flag of dialtrap block.
	flags := map[string]bool{}
	help := sh(t, time.Minute, "/usr/bin/dialtrap", "block", "-h")
	for _, m := range regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		flags["DIALTRAP_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
	}
	env, err := os.ReadFile("/etc/dialtrap/block.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^#?(DIALTRAP_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(env), -1) {
		if !flags[m[1]] {
			t.Errorf("block.env names %s, which is no flag of dialtrap block:\n%s", m[1], help)
		}
	}
	agent := startUnit(t, "dialtrap-block.service", map[string]string{
		"/etc/dialtrap/block.env": "DIALTRAP_NODE=http://" + api + "\nBLOCK_ARGS=--dry-run -v\n",
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(agent.out.String(), "in step with the node") {
		select {
		case err := <-agent.exited:
			t.Fatalf("the block agent exited (%v):\n%s", err, agent.out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the block agent was not in step with the node after 30s:\n%s", agent.out)
		}
	}
	agent.stop(t)
	t.Logf("dialtrap-block.service (--dry-run from BLOCK_ARGS) followed the node at %s and stopped on SIGTERM", api)
}

// removeAndPurge: dpkg -r keeps the conffiles and the data, dpkg -P only the data.
func removeAndPurge(t *testing.T) {
	t.Helper()
	keep := []string{filepath.Join(stateDir, "dialtrap.db"), filepath.Join(stateDir, "node_id"), filepath.Join(stateDir, "sip-tls-key.pem"),
		filepath.Join(logsDir, "dialtrap_json.log"), filepath.Join(logsDir, "dialtrap_json.log.1")}
	for _, p := range keep {
		if !exists(p) {
			t.Fatalf("the node did not write %s", p)
		}
	}
	out := sh(t, 2*time.Minute, "dpkg", "-r", "dialtrap")
	t.Logf("dpkg -r dialtrap:\n%s", strings.TrimSpace(out))
	if exists("/usr/bin/dialtrap") {
		t.Error("dpkg -r left /usr/bin/dialtrap")
	}
	for _, p := range append(slices.Clone(keep), conffiles...) {
		if !exists(p) {
			t.Errorf("dpkg -r removed %s", p)
		}
	}
	out = sh(t, 2*time.Minute, "dpkg", "-P", "dialtrap")
	t.Logf("dpkg -P dialtrap:\n%s", strings.TrimSpace(out))
	if !strings.Contains(out, "purge keeps "+stateDir) {
		t.Errorf("dpkg -P did not say where the data stays:\n%s", out)
	}
	for _, p := range keep {
		if !exists(p) {
			t.Errorf("dpkg -P removed %s: the data must stay", p)
		}
	}
	for _, p := range append(conffiles, "/etc/dialtrap", "/etc/systemd/system/multi-user.target.wants/dialtrap.service", "/etc/systemd/system/dialtrap.service") {
		if exists(p) {
			t.Errorf("dpkg -P left %s", p)
		}
	}
	if st := dpkgStatus(t); st != "" && !strings.HasSuffix(st, "not-installed") {
		t.Errorf("after dpkg -P, dpkg says %q", st)
	}
	t.Logf("after remove and purge the data stays: %s", strings.Join(keep, ", "))
}
