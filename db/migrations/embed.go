// Package migrations embeds the SQL migrations of both dialects so that the
// proxy and migrate binaries carry their schema with them.
package migrations

import "embed"

// FS holds postgres/*.sql and sqlite/*.sql, named NNNNNN_verb_noun.{up,down}.sql.
//
//go:embed postgres/*.sql sqlite/*.sql
var FS embed.FS
