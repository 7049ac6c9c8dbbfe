package main

import rego.v1

# An image pinned by digest is immutable; otherwise the last path segment must
# carry a tag other than "latest".
image_tag(image) := "" if {
	not contains(image, "@")
	not contains(last_path_segment(image), ":")
}

image_tag(image) := tag if {
	not contains(image, "@")
	segment := last_path_segment(image)
	contains(segment, ":")
	parts := split(segment, ":")
	tag := parts[count(parts) - 1]
}

last_path_segment(image) := segments[count(segments) - 1] if segments := split(image, "/")

deny_latest_tag contains msg if {
	some c in all_containers
	image_tag(c.image) == "latest"
	msg := sprintf("container \"%s\" uses image \"%s\": pin a version tag or digest instead of :latest", [c.name, c.image])
}

deny_latest_tag contains msg if {
	some c in all_containers
	image_tag(c.image) == ""
	msg := sprintf("container \"%s\" uses untagged image \"%s\": pin a version tag or digest", [c.name, c.image])
}
