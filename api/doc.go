// Package api holds corepin's public contract: the annotation keys, the JSON
// shapes users, the scheduler extender and the node plugin exchange, and the
// extender's configuration. Every parser here is strict: unknown fields and
// malformed values are errors that name the offending key and value, because
// a silently ignored typo in an annotation means a database on the wrong cores.
//
// The binding description of the contract is ../shared/design/contract.md;
// docs/annotations.md is the user-facing version.
package api
