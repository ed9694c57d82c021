// Package token issues Twilio Voice access tokens to browser softphones.
//
// A Provider answers POST /v1/token with a signed Access Token (a JWT with a
// Voice grant) and the ordered edge list the browser should hand to
// Twilio.Device, so browsers follow the same edge preference as the desk
// phones. The provider keeps no shared state: every replica given the same
// Settings issues equivalent tokens, and Client (or the browser helper served
// at /v1/sdk/edgewise.js) fails over between replica URLs.
//
// The package does not read the config file; the caller converts its config
// into Settings and a Directory and calls Apply at start and on every reload.
//
// It imports nothing of edgewise; cmd/edgewise wires its guard (the
// lockout) and its directory of phones.
package token
