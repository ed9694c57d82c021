// Package webrtc is the WebRTC media leg: a Bridge terminates one
// browser's media (ICE-lite, DTLS-SRTP, rtcp-mux, BUNDLE) with
// github.com/pion/webrtc/v4 and exposes it as a plain RTP endpoint on a
// local UDP socket, so the relay in package media carries the call as if
// the browser were a phone. pion does ICE and the DTLS handshake; once
// DTLS is up the bridge carries the RTP itself with the SRTP keys pion
// derived (fastpath.go), and one epoll loop per Hub serves every bridge's
// plain socket (worker.go). See README.md.
//
// It imports media/sdp and nothing else of edgewise: it reaches the relay
// over plain RTP on loopback, not through the media package.
package webrtc
