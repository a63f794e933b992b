# Cloud Build for `make images` with its own service account. Projects created
# since mid-2024 run builds as a default service account that has no roles, so
# builds cannot write logs or push. hack/terraform/images.sh submits builds
# with --service-account (output build_service_account), the source staged in
# the build bucket, and logs in Cloud Logging only.

resource "google_service_account" "build" {
  count        = var.enable_cloud_build ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name}-build"
  display_name = "Image builds of ${var.name}"
  description  = "Cloud Build service account of make images: pushes to the registry, writes build logs, reads staged sources."
}

resource "google_project_iam_member" "build_logs" {
  count   = var.enable_cloud_build ? 1 : 0
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build[0].member
}

resource "google_artifact_registry_repository_iam_member" "build_push" {
  count      = var.enable_cloud_build ? 1 : 0
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build[0].member
}

resource "google_storage_bucket_iam_member" "build_sources" {
  count  = var.enable_cloud_build ? 1 : 0
  bucket = module.bucket_build[0].name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build[0].member
}
