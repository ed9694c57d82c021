package token

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

// sdkJS is the browser helper, served so pages can import it from any replica.
//
//go:embed web/edgewise.js
var sdkJS []byte

var sdkETag = func() string {
	sum := sha256.Sum256(sdkJS)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

// SDKScript returns the browser helper's source, for callers that serve it
// elsewhere (the admin status page, a CDN upload step).
func SDKScript() []byte { return bytes.Clone(sdkJS) }

func serveSDK(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	// A public, credential-free file: any page may import it as a module.
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("ETag", sdkETag)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "edgewise.js", time.Time{}, bytes.NewReader(sdkJS))
}
