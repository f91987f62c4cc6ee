// Package extender is corepin's cluster half: the state of every node's CPU
// topology and every pod's cores (Scheduler), the filter -> prioritize ->
// bind path over it, the HTTP server kube-scheduler calls, and the
// simulator, which runs scenarios through the very same Scheduler methods.
package extender
