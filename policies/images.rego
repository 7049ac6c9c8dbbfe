package main

import rego.v1

# A digest (image@sha256:...) pins an image; otherwise it needs a tag that is not "latest".
# (The message is spelled out twice: rego-cpp quotes a string literal passed to a
# function when that function formats it with %s.)
deny_latest_tag contains msg if {
	some c in all_containers
	endswith(c.image, ":latest")
	not contains(c.image, "@")
	msg := sprintf("container \"%s\" image \"%s\" uses the latest tag: pin a version tag or digest", [c.name, c.image])
}

deny_latest_tag contains msg if {
	some c in all_containers
	segments := split(c.image, "/")
	not contains(segments[count(segments) - 1], ":")
	not contains(c.image, "@")
	msg := sprintf("container \"%s\" image \"%s\" has no tag: pin a version tag or digest", [c.name, c.image])
}
