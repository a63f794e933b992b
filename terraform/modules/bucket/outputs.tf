output "name" {
  description = "Bucket name."
  value       = google_storage_bucket.this.name
}

output "url" {
  description = "gs:// URL of the bucket."
  value       = "gs://${google_storage_bucket.this.name}"
}

output "id" {
  description = "Bucket id."
  value       = google_storage_bucket.this.id
}

output "settings" {
  description = "The bucket's security and retention settings as planned."
  value = {
    public_access_prevention    = google_storage_bucket.this.public_access_prevention
    uniform_bucket_level_access = google_storage_bucket.this.uniform_bucket_level_access
    versioning                  = google_storage_bucket.this.versioning[0].enabled
    delete_after_days = one(flatten([
      for r in google_storage_bucket.this.lifecycle_rule : [for c in r.condition : c.age if coalesce(c.age, 0) > 0]
      if anytrue([for a in r.action : a.type == "Delete"])
    ]))
    kms_key_name = var.kms_key_name
  }
}
