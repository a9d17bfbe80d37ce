// Package dashboard serves the node's web dashboard: one HTML page and its script, style
// sheet and world map, embedded in the binary so that it works offline, with no CDN and no
// build step. The files hold no data: the page asks the REST API for everything (with the
// operator's token), so they are served without the token, under a strict
// Content-Security-Policy that lets the page run only its own script and talk only to its
// own origin.
package dashboard

//go:generate go run ./gen -in gen/countries-110m.json -out assets/world.svg

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed assets
var assets embed.FS

// Prefix is where the assets are served; the page itself is served at "/".
const Prefix = "/dashboard/"

// CSP is the Content-Security-Policy of every dashboard response. No inline script or style
// may run (a probe's User-Agent shown in the feed can never become code), the page talks
// only to its own origin (the API), and no other site may frame it.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one asset, ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
	version     string // short hash, the ?v= of the page's links
}

// Handler serves the dashboard: "/" (the page) and Prefix+name (its assets). Anything else
// under Prefix is 404.
type Handler struct {
	files map[string]*file // by name under Prefix; "" is the page
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".txt":  "text/plain; charset=utf-8",
}

// New returns the handler. The page's links carry each asset's content hash (?v=), so a
// browser that caches the assets for long still fetches new ones after an upgrade.
func New() *Handler {
	h := &Handler{files: map[string]*file{}}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets/")
		h.files[name] = newFile(b, contentTypes[path.Ext(name)])
		return nil
	})
	if err != nil {
		panic("dashboard: embedded assets unreadable: " + err.Error()) // cannot happen: compiled in
	}
	page := h.files["index.html"].body
	for name, f := range h.files {
		if name != "index.html" {
			page = bytes.ReplaceAll(page, []byte(Prefix+name+"\""), []byte(Prefix+name+"?v="+f.version+"\""))
		}
	}
	h.files[""] = newFile(page, contentTypes[".html"])
	delete(h.files, "index.html")
	return h
}

func newFile(b []byte, ct string) *file {
	if ct == "" {
		ct = "application/octet-stream"
	}
	sum := sha256.Sum256(b)
	v := hex.EncodeToString(sum[:8])
	return &file{body: b, contentType: ct, etag: `"` + v + `"`, version: v}
}

// Size returns the bytes of an asset as served ("" for the page), or -1.
func (h *Handler) Size(name string) int {
	if f, ok := h.files[name]; ok {
		return len(f.body)
	}
	return -1
}

// Public reports whether a path is the dashboard's (served without the API token).
func Public(p string) bool {
	return p == "/" || strings.HasPrefix(p, Prefix)
}

// ServeHTTP serves the page or an asset. Only GET and HEAD reach it (the API checks).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	var f *file
	if r.URL.Path == "/" {
		f = h.files[""]
		// The page names the assets' versions: always ask whether it changed.
		hd.Set("Cache-Control", "no-cache")
	} else if name, ok := strings.CutPrefix(r.URL.Path, Prefix); ok && h.files[name] != nil && name != "" {
		f = h.files[name]
		if r.URL.Query().Get("v") == f.version {
			hd.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			hd.Set("Cache-Control", "no-cache")
		}
	}
	if f == nil {
		hd.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("{\n  \"error\": \"The requested resource could not be found.\"\n}"))
		return
	}
	hd.Set("Content-Type", f.contentType)
	hd.Set("ETag", f.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(f.body)
	}
}

func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}
