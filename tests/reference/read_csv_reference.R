# How R's read.csv reads the awkward CSV files in tests/reference/csv/.
#
# Usage (from the repo root):
#   Rscript tests/reference/read_csv_reference.R
# writes tests/reference/csv/01_write_csv_na.csv (by write.csv) and
# tests/reference/csv_reference.json. The other files come from csv/make_csv_files.py.
#
# Every read is
#   read.csv(file, sep =, dec =, fileEncoding =, check.names = FALSE,
#            stringsAsFactors = FALSE, ...)
# JSON encoding of values: NA -> null; numbers as numbers; Inf -> "Inf",
# -Inf -> "-Inf", NaN -> "NaN" (strings, since JSON has no such numbers).

suppressPackageStartupMessages(library(jsonlite))

dir <- "tests/reference/csv"
out_path <- "tests/reference/csv_reference.json"

# 01: a file written by R's write.csv itself (row names -> empty first header
# field; NA unquoted in numeric and in character columns; strings quoted).
df01 <- data.frame(y = c(1.5, NA, 3.25, 4), x = c(1L, 2L, NA, 4L),
                   g = c("a", "b", NA, "a"), ok = c(TRUE, NA, FALSE, TRUE),
                   stringsAsFactors = FALSE)
write.csv(df01, file.path(dir, "01_write_csv_na.csv"))
write.csv(df01, file.path(dir, "01b_write_csv_na_no_rownames.csv"), row.names = FALSE)

reads <- list(
  list(id = "write_csv_na", file = "01_write_csv_na.csv", args = list()),
  list(id = "write_csv_na_no_rownames", file = "01b_write_csv_na_no_rownames.csv", args = list()),
  list(id = "empty_fields", file = "02_empty_fields.csv", args = list()),
  list(id = "bom_crlf_blank_lines", file = "03_bom_crlf_blank_lines.csv", args = list()),
  list(id = "bom_crlf_blank_lines_UTF-8-BOM", file = "03_bom_crlf_blank_lines.csv",
       args = list(fileEncoding = "UTF-8-BOM")),
  list(id = "quoted_fields", file = "04_quoted_fields.csv", args = list()),
  list(id = "semicolon_decimal_comma", file = "05_semicolon_decimal_comma.csv",
       args = list(sep = ";", dec = ",")),
  list(id = "semicolon_read_with_comma_sep", file = "05_semicolon_decimal_comma.csv",
       args = list()),
  list(id = "tab_separated", file = "06_tab_separated.tsv", args = list(sep = "\t")),
  list(id = "latin1", file = "07_latin1.csv", args = list(fileEncoding = "latin1")),
  list(id = "latin1_read_as_UTF-8", file = "07_latin1.csv", args = list(fileEncoding = "UTF-8")),
  list(id = "special_numbers", file = "08_special_numbers.csv", args = list()),
  list(id = "logical", file = "09_logical.csv", args = list()),
  list(id = "long_ids", file = "10_long_ids.csv", args = list()),
  list(id = "long_ids_no_loss", file = "10_long_ids.csv", args = list(numerals = "no.loss")),
  list(id = "short_row", file = "11_short_row.csv", args = list()),
  list(id = "short_row_fill_FALSE", file = "11_short_row.csv", args = list(fill = FALSE)),
  list(id = "long_row", file = "12_long_row.csv", args = list()),
  list(id = "types_mixed", file = "13_types_mixed.csv", args = list()),
  list(id = "duplicate_header", file = "14_duplicate_header.csv", args = list()),
  list(id = "header_only", file = "15_header_only.csv", args = list())
)

enc_value <- function(v) {
  if (is.na(v) && !is.nan(v)) return(NULL)
  if (is.numeric(v)) {
    if (is.nan(v)) return("NaN")
    if (is.infinite(v)) return(if (v > 0) "Inf" else "-Inf")
  }
  v
}
enc_column <- function(col) {
  vals <- lapply(seq_along(col), function(i) {
    e <- enc_value(col[[i]]); if (is.null(e)) NA else e
  })
  vals
}

do_read <- function(r) {
  path <- file.path(dir, r$file)
  args <- c(list(file = path, check.names = FALSE, stringsAsFactors = FALSE), r$args)
  warns <- character(0)
  res <- withCallingHandlers(
    tryCatch(do.call(read.csv, args), error = function(e) e),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  shown_args <- c(list(sep = ",", dec = ".", fileEncoding = ""), r$args)
  shown_args <- shown_args[!duplicated(names(shown_args), fromLast = TRUE)]
  out <- list(id = r$id, file = r$file,
              file_md5 = unname(tools::md5sum(path)),
              args = c(shown_args, list(check.names = FALSE, stringsAsFactors = FALSE)),
              call = paste0("read.csv(", deparse(r$file), ", ",
                            paste(sprintf("%s = %s", names(shown_args),
                                          sapply(shown_args, deparse)), collapse = ", "),
                            ", check.names = FALSE, stringsAsFactors = FALSE)"),
              warnings = I(unique(warns)))
  if (inherits(res, "error")) {
    out$error <- conditionMessage(res)
    return(out)
  }
  out$error <- NA
  out$nrow <- nrow(res)
  out$names <- I(names(res))
  out$classes <- I(unname(sapply(res, function(c) class(c)[1])))
  out$columns <- lapply(seq_along(res), function(j)
    list(name = names(res)[j], class = class(res[[j]])[1],
         values = I(enc_column(res[[j]])),
         # exact text of doubles (17 significant digits) for columns like long ids
         repr = if (is.double(res[[j]])) I(sprintf("%.17g", res[[j]])) else NA))
  out
}

result <- list(
  meta = list(R_version = R.version.string,
              jsonlite_version = as.character(packageVersion("jsonlite")),
              date = format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z"),
              locale_LC_CTYPE = Sys.getlocale("LC_CTYPE"),
              value_encoding = paste("NA -> null; numbers as JSON numbers; Inf -> \"Inf\",",
                                     "-Inf -> \"-Inf\", NaN -> \"NaN\"; logicals as true/false;",
                                     "repr: sprintf('%.17g') of double columns (else null)")),
  reads = lapply(reads, do_read)
)
names(result$reads) <- sapply(reads, `[[`, "id")
write_json(result, out_path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null")
cat("wrote", out_path, "\n")
