package ui

import (
	"embed"
	"net/http"
	"path"
)

// assets is the page: index.html, its script and style, and the login
// page (a template, with its script and style inline).
//
//go:embed assets
var assets embed.FS

var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
}

// page serves the dashboard's one page; the script routes within it.
func (d *Dashboard) page(w http.ResponseWriter, _ *http.Request) {
	b, err := assets.ReadFile("assets/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", policy(""))
	_, _ = w.Write(b)
}

// static serves the page's script and style.
func (d *Dashboard) static(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ct, ok := contentTypes[path.Ext(name)]
	b, err := assets.ReadFile("assets/" + name)
	if !ok || err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
}
