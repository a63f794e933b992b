# Docker repository for images/trainer, images/tf-trainer and images/watcher.
resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = local.registry_id
  format        = "DOCKER"
  description   = "Training and watcher images (make images)."
  kms_key_name  = var.kms_key_name
  labels        = var.labels

  docker_config {
    immutable_tags = false
  }

  # Keep the 20 newest versions of each image; delete untagged ones after a week.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "604800s"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.ar_agent]
}

resource "google_artifact_registry_repository_iam_member" "pushers" {
  for_each   = toset(var.image_pushers)
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}
