// Package container checks the container image's recipe without a container engine: the
// Dockerfile's build stage is acted out on this machine (its COPYs from a context filtered by
// .dockerignore, its RUNs with its ENV and ARGs), the binary it leaves is checked (static ELF,
// stamped version), and the final stage's promises (non-root user, ports, volume, defaults,
// health check) are tried against a real node on loopback, as are compose.yaml's services.
package container

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// repo is the module root, from this package's directory.
const repo = "../.."

// Build arguments given to the build, and so expected in the binary.
var buildArgs = map[string]string{"VERSION": "9.8.7-test", "COMMIT": "abc1234"}

func TestDockerfileInvariants(t *testing.T) {
	df := parseDockerfile(t, filepath.Join(repo, "Dockerfile"))
	if len(df.stages) != 2 {
		t.Fatalf("%d stages, want a build stage and a final one", len(df.stages))
	}
	build, final := df.stages[0], df.stages[1]

	// The build stage's Go is go.mod's, exactly.
	if want := "golang:" + goModVersion(t) + "-bookworm"; build.from != want || build.name != "build" {
		t.Errorf("build stage FROM %s AS %s, want %s AS build", build.from, build.name, want)
	}
	if v := build.env()["GOTOOLCHAIN"]; v != "local" {
		t.Errorf("build stage GOTOOLCHAIN=%q, want local (a Go other than go.mod's must fail, not download)", v)
	}
	// The module download is a layer of its own, made before the sources are copied.
	var downloadAt, sourcesAt int
	for i, in := range build.instrs {
		switch {
		case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
			downloadAt = i
		case in.cmd == "COPY" && sourcesAt == 0 && strings.HasPrefix(in.args, "cmd"):
			sourcesAt = i
		}
	}
	if downloadAt == 0 || sourcesAt < downloadAt {
		t.Errorf("go mod download (instruction %d) must come before the sources are copied (instruction %d)", downloadAt, sourcesAt)
	}

	if final.from != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %s", final.from)
	}
	user := final.last("USER")
	if user == nil || !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(user.args) {
		t.Errorf("USER %v: want a numeric user other than root", user)
	}
	var exposed []string
	for _, in := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	slices.Sort(exposed)
	if want := []string{"4222/tcp", "4222/udp", "5060/tcp", "5060/udp", "5061/tcp", "8082/tcp"}; !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v, want %v", exposed, want)
	}
	vol := final.last("VOLUME")
	if vol == nil || vol.args != "/var/lib/dialtrap" {
		t.Fatalf("VOLUME %v, want /var/lib/dialtrap", vol)
	}
	env := final.env()
	for k, want := range map[string]string{"DIALTRAP_DATA_DIR": vol.args, "DIALTRAP_API": "true",
		"DIALTRAP_API_ADDR": "0.0.0.0:8082", "DIALTRAP_JSON_LOG": "true"} {
		if env[k] != want {
			t.Errorf("ENV %s=%q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["DIALTRAP_API_TOKEN"]; ok {
		t.Error("the image must not carry an API token")
	}
	if wd := final.last("WORKDIR"); wd == nil || wd.args != vol.args {
		t.Errorf("WORKDIR %v, want the volume", wd)
	}
	// The volume's directory is owned by the user, so that a new volume is writable.
	found := false
	for _, in := range final.all("COPY") {
		if in.fields()[1] == vol.args {
			found = true
			if in.flags["chown"] != user.args {
				t.Errorf("%s is copied with --chown=%s, want the USER %s", vol.args, in.flags["chown"], user.args)
			}
		}
	}
	if !found {
		t.Errorf("no COPY makes %s", vol.args)
	}
	entry := final.execForm(t, "ENTRYPOINT")
	hc := final.last("HEALTHCHECK")
	if hc == nil {
		t.Fatal("no HEALTHCHECK")
	}
	check := hc.healthCmd(t)
	if len(entry) != 1 || len(check) < 2 || check[0] != entry[0] || check[1] != "health" {
		t.Errorf("ENTRYPOINT %q, HEALTHCHECK %q: want the binary, and dialtrap health", entry, check)
	}
	// dialtrap health gives up before Docker kills it, so its reason is in docker inspect.
	if !slices.Contains(check, "--timeout") || hc.flags["timeout"] == "" {
		t.Errorf("HEALTHCHECK %v %q: give both timeouts", hc.flags, check)
	} else if d, h := dur(t, hc.flags["timeout"]), dur(t, check[slices.Index(check, "--timeout")+1]); h >= d {
		t.Errorf("dialtrap health --timeout %v is not under HEALTHCHECK --timeout %v", h, d)
	}
}

// The build stage run here: the context is what .dockerignore lets through, the stage's
// COPYs and RUNs are carried out in order, and the file the final stage copies is a static,
// stripped ELF executable that prints the build arguments as its version.
func TestImageBuild(t *testing.T) {
	bin := buildImageBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s is not an ELF file: %v", bin, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want a fixed-address executable (ET_EXEC, not PIE)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %v: the binary is dynamically linked", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("the binary has a .dynamic section")
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: -ldflags -s is missing")
	}
	out, err := exec.Command(bin, "-V").CombinedOutput()
	want := fmt.Sprintf("dialtrap %s (commit %s, go", buildArgs["VERSION"], buildArgs["COMMIT"])
	if err != nil || !strings.HasPrefix(string(out), want) {
		t.Errorf("%s -V: %v %q, want %q...", bin, err, out, want)
	}
}

// The Dockerfile's go build is `make build`'s, flag for flag.
func TestBuildCommandIsMakes(t *testing.T) {
	df := parseDockerfile(t, filepath.Join(repo, "Dockerfile"))
	// The ARGs' defaults (TARGETOS and TARGETARCH, which BuildKit sets per platform), then
	// the test's build arguments.
	args := map[string]string{}
	for _, in := range df.stages[0].all("ARG") {
		name, def, _ := strings.Cut(in.args, "=")
		args[name] = def
	}
	maps.Copy(args, buildArgs)
	var dockerCmd []string
	for _, in := range df.stages[0].all("RUN") {
		if strings.Contains(in.args, "go build") {
			dockerCmd = shellWords(t, os.Expand(in.args, func(k string) string { return args[k] }))
		}
	}
	mk := exec.Command("make", "-s", "-n", "build", "GO=go", "VERSION="+buildArgs["VERSION"], "COMMIT="+buildArgs["COMMIT"], "ARCH="+args["TARGETARCH"])
	mk.Dir = repo
	out, err := mk.Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	var makeCmd []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "go build") {
			makeCmd = shellWords(t, l)
		}
	}
	if dockerCmd == nil || makeCmd == nil || !slices.Equal(dockerCmd, makeCmd) {
		t.Errorf("the Dockerfile builds with\n  %q\nmake build with\n  %q", dockerCmd, makeCmd)
	}
}

// The image's defaults run a node: the environment of the final stage and of compose.yaml's
// node service, the entrypoint, with loopback ports and a temporary volume. The JSON log is
// on, the API wants the token, the HEALTHCHECK command says healthy, then unhealthy once the
// node is gone; compose.yaml's firewall agent (dry run) follows that node with the token.
func TestImageDefaultsRunNode(t *testing.T) {
	bin := buildImageBinary(t)
	df := parseDockerfile(t, filepath.Join(repo, "Dockerfile"))
	final := df.stages[1]
	cf := loadCompose(t)
	const token = "compose-test-token"
	vars := map[string]string{"DIALTRAP_API_TOKEN": token}

	vol := final.last("VOLUME").args
	dataDir := t.TempDir()
	apiAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")))
	env := map[string]string{}
	for k, v := range final.env() {
		env[k] = v
	}
	for k, v := range cf.Services["dialtrap"].Environment {
		env[k] = interpolate(t, v, vars)
	}
	// The container's paths and wildcard address, on this machine.
	for k, v := range env {
		v = strings.ReplaceAll(v, vol, dataDir)
		v = strings.ReplaceAll(v, "0.0.0.0:8082", apiAddr)
		env[k] = v
	}
	environ := []string{"PATH=/usr/bin:/bin"}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	entry := final.execForm(t, "ENTRYPOINT")
	ready := filepath.Join(t.TempDir(), "ready.json")
	args := append(final.cmdArgs(t), "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0", "--ready-file", ready)
	node := exec.Command(imagePath(bin, entry[0]), args...)
	node.Env, node.Dir = environ, dataDir
	var nodeLog testutil.SyncBuffer
	node.Stderr = &nodeLog
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { node.Wait(); close(exited) }()
	t.Cleanup(func() {
		if node.ProcessState == nil {
			node.Process.Kill()
			<-exited
		}
	})
	addrs := waitReady(t, ready, exited, &nodeLog)
	if addrs.API != apiAddr {
		t.Fatalf("API on %q, want %s (DIALTRAP_API_ADDR of the image)", addrs.API, apiAddr)
	}
	if strings.Contains(nodeLog.String(), "without --api-token") {
		t.Errorf("the node warns of a missing token that compose.yaml gives:\n%s", nodeLog.String())
	}

	// The API wants compose.yaml's token.
	resp, err := http.Get("http://" + apiAddr + "/ip-addresses")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/ip-addresses without the token: %s, want 401", resp.Status)
	}

	// A probe reaches the JSON log in the volume.
	c, err := net.Dial("udp", addrs.SIPUDP)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "OPTIONS sip:100@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:100@b>\r\nCall-ID: container-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		addrs.SIPUDP, c.LocalAddr())
	c.Close()
	jsonLog := filepath.Join(dataDir, "dialtrap_json.log")
	waitFor(t, 10*time.Second, "the probe in the JSON log", func() bool {
		b, _ := os.ReadFile(jsonLog)
		return bytes.Contains(b, []byte(`"called_number":"100"`))
	})

	// The HEALTHCHECK, as Docker runs it: its command in the container's environment.
	check := final.last("HEALTHCHECK").healthCmd(t)
	health := func() (int, string) {
		cmd := exec.Command(imagePath(bin, check[0]), check[1:]...)
		cmd.Env, cmd.Dir = environ, dataDir
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	if code, out := health(); code != 0 || !strings.Contains(out, "ok: dialtrap "+buildArgs["VERSION"]) {
		t.Errorf("HEALTHCHECK %q: exit %d, %s; want 0", check, code, out)
	}

	// compose.yaml's firewall agent, in a dry run against this node.
	block := cf.Services["block"]
	agentArgs := slices.Clone(block.Command)
	published := cf.Services["dialtrap"].apiPublished(t)
	for i, a := range agentArgs {
		if a == "--node" && i+1 < len(agentArgs) {
			if agentArgs[i+1] != "http://"+published {
				t.Errorf("the agent asks %s, want the API where the host publishes it, http://%s", agentArgs[i+1], published)
			}
			agentArgs[i+1] = "http://" + apiAddr
		}
		if a == "--data-dir" && i+1 < len(agentArgs) {
			agentArgs[i+1] = t.TempDir()
		}
	}
	agent := exec.Command(imagePath(bin, entry[0]), append(agentArgs, "--dry-run", "-v")...)
	agent.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range block.Environment {
		agent.Env = append(agent.Env, k+"="+interpolate(t, v, vars))
	}
	var agentLog testutil.SyncBuffer
	agent.Stdout, agent.Stderr = &agentLog, &agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	waitFor(t, 15*time.Second, "the agent in step with the node", func() bool {
		select {
		case err := <-agentDone:
			t.Fatalf("the agent exited: %v\n%s", err, agentLog.String())
		default:
		}
		return strings.Contains(agentLog.String(), "in step with the node")
	})
	agent.Process.Signal(syscall.SIGTERM)
	if err := <-agentDone; err != nil {
		t.Errorf("the agent after SIGTERM: %v\n%s", err, agentLog.String())
	}

	// docker stop: SIGTERM, every event written, exit 0; then the check fails.
	node.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the node did not stop on SIGTERM:\n%s", nodeLog.String())
	}
	if code := node.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the node exited %d after SIGTERM:\n%s", code, nodeLog.String())
	}
	if code, out := health(); code != 1 || !strings.Contains(out, "unhealthy") {
		t.Errorf("HEALTHCHECK with the node gone: exit %d, %s; want 1", code, out)
	}
}

// compose.yaml: its services use the image's volume and ports, publish the API on loopback
// only, give the agent what changing the host's nftables takes, and name only options the
// binary has.
func TestComposeFile(t *testing.T) {
	cf := loadCompose(t)
	df := parseDockerfile(t, filepath.Join(repo, "Dockerfile"))
	final := df.stages[1]
	node, ok := cf.Services["dialtrap"]
	if !ok {
		t.Fatal("no dialtrap service")
	}
	if node.Build.Context != "." || node.Build.Args["VERSION"] == "" || node.Build.Args["COMMIT"] == "" {
		t.Errorf("build %+v: want the repository's Dockerfile with VERSION and COMMIT", node.Build)
	}
	vol := final.last("VOLUME").args
	if !slices.ContainsFunc(node.Volumes, func(v string) bool {
		name, target, _ := strings.Cut(v, ":")
		_, declared := cf.Volumes[name]
		return target == vol && declared
	}) {
		t.Errorf("volumes %q: want a named volume on %s", node.Volumes, vol)
	}
	if !strings.Contains(node.Environment["DIALTRAP_API_TOKEN"], ":?") {
		t.Errorf("DIALTRAP_API_TOKEN %q: want ${DIALTRAP_API_TOKEN:?...}, so that compose refuses to start without it", node.Environment["DIALTRAP_API_TOKEN"])
	}
	var exposed []string
	for _, in := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.args)...)
	}
	for _, p := range node.Ports {
		parts := strings.Split(p, ":")
		target := parts[len(parts)-1]
		if !strings.Contains(target, "/") {
			target += "/tcp"
		}
		if !slices.Contains(exposed, target) {
			t.Errorf("port %s: %s is not exposed by the image", p, target)
		}
		if strings.HasPrefix(target, "8082/") && (len(parts) != 3 || parts[0] != "127.0.0.1") {
			t.Errorf("port %s: publish the API on the host's loopback only (127.0.0.1:8082:8082)", p)
		}
	}
	node.apiPublished(t)
	if !node.ReadOnly || !slices.Contains(node.CapDrop, "ALL") {
		t.Errorf("node: read_only %v, cap_drop %q; want a read-only root and no capabilities", node.ReadOnly, node.CapDrop)
	}

	block, ok := cf.Services["block"]
	if !ok {
		t.Fatal("no block service")
	}
	if len(block.Command) == 0 || block.Command[0] != "block" || block.NetworkMode != "host" ||
		!slices.Contains(block.CapAdd, "NET_ADMIN") || block.User != "0:0" || !block.Healthcheck.Disable {
		t.Errorf("block service %+v: want dialtrap block in the host's network, as root with NET_ADMIN, no health check", block)
	}
	if block.Image != node.Image {
		t.Errorf("the agent runs image %s, the node %s", block.Image, node.Image)
	}

	// Every DIALTRAP_ variable set, or suggested in a comment, is an option of the node; the
	// agent's flags are the block command's.
	help, err := exec.Command(buildImageBinary(t), "-h").Output()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(repo, "compose.yaml"))
	for _, m := range regexp.MustCompile(`(?m)^\s*#?\s*(DIALTRAP_[A-Z0-9_]+):`).FindAllStringSubmatch(string(raw), -1) {
		if !bytes.Contains(help, []byte("["+m[1]+"]")) {
			t.Errorf("compose.yaml sets %s, which is no option of the node (dialtrap -h)", m[1])
		}
	}
	for _, svc := range []composeService{node, block} {
		for k := range svc.Environment {
			if !bytes.Contains(help, []byte("["+k+"]")) {
				t.Errorf("%s is no option of the node", k)
			}
		}
	}
	cmd := exec.Command(buildImageBinary(t), append(slices.Clone(block.Command), "-h")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("dialtrap %q -h: %v\n%s", block.Command, err, out)
	}
}

type readyAddrs struct {
	SIPUDP string `json:"sip_udp"`
	API    string `json:"api"`
}

func waitReady(t *testing.T, path string, exited <-chan struct{}, log *testutil.SyncBuffer) readyAddrs {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			var a readyAddrs
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatalf("ready file: %v", err)
			}
			return a
		}
		select {
		case <-exited:
			t.Fatalf("the node exited at start:\n%s", log.String())
		case <-deadline:
			t.Fatalf("the node was not ready after 20s:\n%s", log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// imagePath maps the image's path of the binary to the one built here.
func imagePath(built, inImage string) string {
	if filepath.Base(inImage) != "dialtrap" {
		return inImage // not the binary: fails to run, and the test says so
	}
	return built
}

// goModVersion is the Go of go.mod: its toolchain line, else its go line.
func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var goLine, toolchain string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "go" {
			goLine = f[1]
		}
		if len(f) == 2 && f[0] == "toolchain" {
			toolchain = strings.TrimPrefix(f[1], "go")
		}
	}
	if toolchain != "" {
		return toolchain
	}
	return goLine
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildLog  string
)

// buildImageBinary carries out the Dockerfile's build stage once for all tests and returns the
// file the final stage copies as its entrypoint.
func buildImageBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dialtrap-image-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin, buildLog, buildErr = runBuildStage(dir)
	})
	if buildErr != nil {
		t.Fatalf("the Dockerfile's build stage: %v\n%s", buildErr, buildLog)
	}
	return builtBin
}

// TestMain removes the build stage's directory at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		// builtBin is <dir>/root/src/bin/dialtrap: remove <dir>.
		os.RemoveAll(filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(builtBin)))))
	}
	os.Exit(code)
}

func runBuildStage(dir string) (bin, log string, err error) {
	var logb strings.Builder
	tt := &fatalCatcher{}
	df := parseDockerfileErr(filepath.Join(repo, "Dockerfile"), tt)
	if tt.err != nil {
		return "", "", tt.err
	}
	ctxDir, root := filepath.Join(dir, "context"), filepath.Join(dir, "root")
	ignore, err := readDockerignore(filepath.Join(repo, ".dockerignore"))
	if err != nil {
		return "", "", err
	}
	if err := copyContext(repo, ctxDir, ignore); err != nil {
		return "", "", err
	}
	build := df.stages[0]
	cwd := root
	env := map[string]string{}
	args := map[string]string{}
	goEnv := func(k string) string {
		out, _ := exec.Command("go", "env", k).Output()
		return strings.TrimSpace(string(out))
	}
	// The machine's Go, caches and PATH; what the image's ENV and ARGs set on top. No GOFLAGS
	// of this machine, and no network: the modules come from the cache.
	base := map[string]string{"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"),
		"GOCACHE": goEnv("GOCACHE"), "GOMODCACHE": goEnv("GOMODCACHE"), "GOPROXY": "off", "GOFLAGS": ""}
	for _, in := range build.instrs {
		switch in.cmd {
		case "WORKDIR":
			cwd = filepath.Join(root, in.args)
			if err := os.MkdirAll(cwd, 0o755); err != nil {
				return "", logb.String(), err
			}
		case "ENV":
			for k, v := range in.env() {
				env[k] = v
			}
		case "ARG":
			name, def, _ := strings.Cut(in.args, "=")
			args[name] = def
			if v, ok := buildArgs[name]; ok {
				args[name] = v
			}
		case "COPY":
			if in.flags["from"] != "" {
				return "", logb.String(), fmt.Errorf("line %d: the build stage copies from another stage", in.line)
			}
			f := in.fields()
			dest := f[len(f)-1]
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(strings.TrimPrefix(cwd, root), dest)
			}
			for _, src := range f[:len(f)-1] {
				if err := copyIn(filepath.Join(ctxDir, src), filepath.Join(root, dest), strings.HasSuffix(f[len(f)-1], "/") || len(f) > 2); err != nil {
					return "", logb.String(), fmt.Errorf("line %d: COPY %s: %w (is it left out by .dockerignore?)", in.line, src, err)
				}
			}
		case "RUN":
			cmd := exec.Command("sh", "-c", in.args)
			cmd.Dir = cwd
			for _, m := range []map[string]string{base, env, args} {
				for k, v := range m {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			start := time.Now()
			out, err := cmd.CombinedOutput()
			fmt.Fprintf(&logb, "RUN %s (%.1fs)\n%s", in.args, time.Since(start).Seconds(), out)
			if err != nil {
				return "", logb.String(), fmt.Errorf("line %d: RUN %s: %w", in.line, in.args, err)
			}
		}
	}
	final := df.stages[1]
	entry := final.execForm(tt, "ENTRYPOINT")
	if tt.err != nil || len(entry) == 0 {
		return "", logb.String(), fmt.Errorf("final stage: no ENTRYPOINT: %v", tt.err)
	}
	for _, in := range final.all("COPY") {
		f := in.fields()
		if in.flags["from"] == build.name && len(f) == 2 && f[1] == entry[0] {
			return filepath.Join(root, f[0]), logb.String(), nil
		}
	}
	return "", logb.String(), fmt.Errorf("the final stage copies nothing from %s to its ENTRYPOINT %s", build.name, entry[0])
}

// copyIn copies src (a file, or a directory's contents, as COPY does) to dest; intoDir says
// dest is a directory for a file.
func copyIn(src, dest string, intoDir bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if intoDir {
			dest = filepath.Join(dest, filepath.Base(src))
		}
		return copyFile(src, dest)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		return copyFile(p, filepath.Join(dest, rel))
	})
}

func copyFile(src, dest string) error {
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dest)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyContext copies the files of the repository .dockerignore lets into the build context.
func copyContext(from, to string, ignore []ignoreRule) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if rel == "." || d.IsDir() {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if ignored(ignore, rel) {
			return nil
		}
		return copyFile(p, filepath.Join(to, rel))
	})
}

// fatalCatcher lets the parser, written for tests, run where no *testing.T is at hand.
type fatalCatcher struct{ err error }

func (f *fatalCatcher) Helper() {}
func (f *fatalCatcher) Fatalf(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}
