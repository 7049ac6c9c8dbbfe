package main

import rego.v1

recommended_labels := ["app.kubernetes.io/name", "app.kubernetes.io/instance"]

warn_missing_labels contains msg if {
	input.kind
	some label in recommended_labels
	not input.metadata.labels[label]
	msg := sprintf("missing recommended label %s", [label])
}
