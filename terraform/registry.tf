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

  # Keep the registry_keep_recent newest versions of each image; delete every
  # other version, tagged or not, once older than registry_delete_after_days
  # (make images tags every commit, so tagged images pile up otherwise). KEEP
  # policies win over DELETE policies. Untagged versions go after a week.
  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.registry_keep_recent
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.registry_delete_after_days * 86400}s"
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
