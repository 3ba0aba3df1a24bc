"""Write the awkward CSV files byte for byte (run from this folder).

01_write_csv_na.csv is written by R's write.csv (see read_csv_reference.R); every other
file is written here so that BOMs, CRLF line ends and latin-1 bytes are exact.
"""
from pathlib import Path

FILES = {
    # empty fields in a numeric and a text column
    "02_empty_fields.csv": b"y,x,g,label\n1.5,2,a,first\n2.5,,b,\n,3,,third\n4.0,4,c,fourth\n",
    # UTF-8 BOM, CRLF line ends, trailing blank lines
    "03_bom_crlf_blank_lines.csv": (b"\xef\xbb\xbfy,x,g\r\n1.1,1,a\r\n2.2,2,b\r\n3.3,3,a\r\n"
                                    b"\r\n\r\n"),
    # quoted fields holding the separator, doubled quotes and a line break
    "04_quoted_fields.csv": (b'y,name,g\n'
                             b'1,"Smith, John",a\n'
                             b'2,"say ""hi""",b\n'
                             b'3,"two\nlines",a\n'
                             b'4,plain,"b"\n'
                             b'"5","quoted, number above",a\n'),
    # ';' separator with ',' as decimal mark (read.csv2 style)
    "05_semicolon_decimal_comma.csv": (b"y;x;g\n1,5;10;a\n-2,25;20;b\n3;30,5;a\n"),
    # tab separator
    "06_tab_separated.tsv": b"y\tx\tg\n1.5\t1\tg1\n2.5\t2\tg 2\n3.5\t\tg1\n",
    # latin-1 encoded text
    "07_latin1.csv": "y,town,g\n1,M\u00fcnchen,a\n2,Z\u00fcrich,b\n3,S\u00e3o Paulo,a\n4,Stra\u00dfe,b\n".encode("latin-1"),
    # R's number grammar: Inf/-inf/NaN in any case, spaces around numbers, 1_000 is text
    "08_special_numbers.csv": (b"a,b,c,d,e\n"
                               b"Inf,1_000, 3 ,1e3,-.5\n"
                               b"-inf,2_000,4 ,+2, 0x10\n"
                               b"NaN,3000, 5,1E-2,.5e1\n"
                               b"nan,NA,NA,-Infinity,7\n"
                               b"-Inf,5,6,inf,8\n"),
    # logical columns: TRUE/FALSE/T/F/NA; true/false; a mixture with text
    "09_logical.csv": (b"flag,lower,mixed,y\n"
                       b"TRUE,true,TRUE,1\n"
                       b"FALSE,false,yes,2\n"
                       b"T,True,F,3\n"
                       b"F,False,no,4\n"
                       b"NA,NA,NA,5\n"),
    # ids of more than 15 digits (do not survive a double round trip)
    "10_long_ids.csv": (b"id,y,small_id\n"
                        b"12345678901234567,1.0,1\n"
                        b"12345678901234568,2.0,2\n"
                        b"99999999999999999999,3.0,3\n"
                        b"12345678901234567,4.0,1\n"),
    # a short row (and, separately, a long row)
    "11_short_row.csv": b"y,x,g\n1,2,a\n2,3\n3,4,b\n",
    "12_long_row.csv": b"y,x,g\n1,2,a\n2,3,b,extra\n3,4,b\n",
    # integer vs double, quoted numbers, all-NA column, spaces in text, an NA string quoted
    "13_types_mixed.csv": (b"int,dbl,num_text,all_na,txt,qna\n"
                           b'1,1.0,1,NA, a ,"NA"\n'
                           b'2,2,two,NA,b ,x\n'
                           b'"3",3.5,3,,c,""\n'
                           b'-4,4e0,4,NA,"d",y\n'),
    # duplicate column names
    "14_duplicate_header.csv": b"y,x,x,g\n1,2,3,a\n2,3,4,b\n",
    # header only
    "15_header_only.csv": b"y,x,g\n",
}

if __name__ == "__main__":
    here = Path(__file__).parent
    for name, data in FILES.items():
        (here / name).write_bytes(data)
        print("wrote", name, len(data), "bytes")
